package cdshooks_test

import (
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/clinical/cdshooks"
)

// The CDC 2022 conversion factors, restated from the guideline so that
// expected values do not come from the code under test.
var cdcFactor = map[string]float64{"oxycodone": 1.5, "morphine": 1, "hydromorphone": 5, "tramadol": 0.2}

// mme is strength × tablets × doses per day × factor.
func mme(drug string, strengthMg, tablets, everyHours float64) float64 {
	return strengthMg * tablets * (24 / everyHours) * cdcFactor[drug]
}

const rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"

func medReq(id, patient, status, rxcui, text string, tablets, everyHours float64) map[string]any {
	return map[string]any{
		"resourceType": "MedicationRequest", "id": id, "status": status, "intent": "order",
		"subject":                   map[string]any{"reference": "Patient/" + patient},
		"medicationCodeableConcept": map[string]any{"coding": []any{map[string]any{"system": rxnorm, "code": rxcui, "display": text}}, "text": text},
		"dosageInstruction": []any{map[string]any{
			"timing":      map[string]any{"repeat": map[string]any{"frequency": 1, "period": everyHours, "periodUnit": "h"}},
			"doseAndRate": []any{map[string]any{"doseQuantity": map[string]any{"value": tablets, "unit": "tablet"}}},
		}},
	}
}

func bundle(res ...map[string]any) map[string]any {
	var entries []any
	for _, r := range res {
		entries = append(entries, map[string]any{"resource": r})
	}
	return map[string]any{"resourceType": "Bundle", "type": "searchset", "entry": entries}
}

// hookRequest is a spec example with its patient, draft orders, data
// access and prefetch replaced.
func hookRequest(t *testing.T, name, patient string, drafts []map[string]any, fhirServer, token string, prefetch map[string]any) map[string]any {
	req := example(t, name)
	ctx := req["context"].(map[string]any)
	ctx["patientId"] = patient
	if drafts != nil {
		ctx["draftOrders"] = bundle(drafts...)
		if name == "order-select.json" {
			ctx["selections"] = []any{"MedicationRequest/" + drafts[0]["id"].(string)}
		}
	}
	if fhirServer == "" {
		delete(req, "fhirServer")
		delete(req, "fhirAuthorization")
	} else {
		req["fhirServer"] = fhirServer
		req["fhirAuthorization"].(map[string]any)["access_token"] = token
		req["fhirAuthorization"].(map[string]any)["subject"] = cdsServiceClient
	}
	if prefetch == nil {
		delete(req, "prefetch")
	} else {
		req["prefetch"] = prefetch
	}
	return req
}

type card struct {
	summary, detail, indicator, label string
}

func cards(t *testing.T, r response) []card {
	t.Helper()
	m := r.expect(t, 200).json(t)
	list, ok := m["cards"].([]any)
	if !ok {
		t.Fatalf("no cards array: %s", r.body)
	}
	var out []card
	for _, x := range list {
		c := x.(map[string]any)
		src, _ := c["source"].(map[string]any)
		k := card{summary: c["summary"].(string), indicator: c["indicator"].(string)}
		k.detail, _ = c["detail"].(string)
		k.label, _ = src["label"].(string)
		if k.label == "" || len([]rune(k.summary)) > 140 || k.detail == "" {
			t.Errorf("card without source label, detail, or with a summary over 140 characters: %v", c)
		}
		switch k.indicator {
		case "info", "warning", "critical":
		default:
			t.Errorf("indicator %q", k.indicator)
		}
		out = append(out, k)
	}
	return out
}

func total(v float64) string {
	return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64) + " MME/day"
}

func TestOpioidMMEService(t *testing.T) {
	w := newWorld(t, false)
	// p1 and p3 take oxycodone 5 mg every 6 h; p2 takes nothing.
	oxy := mme("oxycodone", 5, 1, 6) // 30
	w.put(t, map[string]any{"resourceType": "Patient", "id": "p1"})
	w.put(t, map[string]any{"resourceType": "Patient", "id": "p2"})
	w.put(t, map[string]any{"resourceType": "Patient", "id": "p3"})
	w.put(t, medReq("oxy1", "p1", "active", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", 1, 6))
	w.put(t, medReq("oxy3", "p3", "active", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", 1, 6))
	w.put(t, medReq("old3", "p3", "stopped", "892582", "morphine sulfate 15 MG Oral Tablet", 4, 4))
	user := w.iss.token(t, w.fhirBase, "user/*.rs", "")

	morphineDraft := medReq("draft-morphine", "p1", "draft", "892582", "morphine sulfate 15 MG Oral Tablet", 1, 8)
	hydroDraft := medReq("draft-hydro", "p1", "draft", "897696", "hydromorphone hydrochloride 2 MG Oral Tablet", 2, 4)

	t.Run("spec example (amoxicillin): no cards", func(t *testing.T) {
		for _, name := range []string{"order-sign.json", "order-select.json"} {
			if got := cards(t, w.call(t, w.remoteCDS, example(t, name))); len(got) != 0 {
				t.Errorf("%s: %d cards for an antibiotic: %+v", name, len(got), got)
			}
		}
	})

	t.Run("order-sign with prefetch: 50-89 is a warning", func(t *testing.T) {
		prefetch := map[string]any{"patient": map[string]any{"resourceType": "Patient", "id": "p9"},
			"medications": bundle(medReq("pre-oxy", "p9", "active", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", 1, 6),
				medReq("pre-old", "p9", "completed", "892582", "morphine sulfate 15 MG Oral Tablet", 4, 4))}
		d := medReq("draft-morphine", "p9", "draft", "892582", "morphine sulfate 15 MG Oral Tablet", 1, 8)
		want := oxy + mme("morphine", 15, 1, 8) // 30 + 45 = 75
		// The remote service has no FHIR server to reach: the prefetch is all it has.
		got := cards(t, w.call(t, w.remoteCDS, hookRequest(t, "order-sign.json", "p9", []map[string]any{d}, "", "", prefetch)))
		if len(got) != 1 || got[0].indicator != "warning" || !strings.Contains(got[0].summary, total(want)) {
			t.Fatalf("cards %+v, want one warning with %s", got, total(want))
		}
		for _, s := range []string{"morphine sulfate 15 MG Oral Tablet (draft order)", "oxycodone hydrochloride 5 MG Oral Tablet (active)", "45", "30"} {
			if !strings.Contains(got[0].detail, s) {
				t.Errorf("detail lacks %q: %s", s, got[0].detail)
			}
		}
	})

	t.Run("order-select without prefetch, fhirServer is this server: 90+ is critical", func(t *testing.T) {
		want := oxy + mme("hydromorphone", 2, 2, 4) // 30 + 120 = 150
		got := cards(t, w.call(t, w.root, hookRequest(t, "order-select.json", "p1", []map[string]any{hydroDraft}, w.fhirBase, user, nil)))
		if len(got) != 1 || got[0].indicator != "critical" || !strings.Contains(got[0].summary, total(want)) {
			t.Fatalf("cards %+v, want one critical with %s", got, total(want))
		}
	})

	t.Run("order-sign without prefetch, remote fhirServer over HTTP", func(t *testing.T) {
		want := oxy + mme("hydromorphone", 2, 2, 4) + mme("morphine", 15, 1, 8) // two drafts: 195
		got := cards(t, w.call(t, w.remoteCDS, hookRequest(t, "order-sign.json", "p1", []map[string]any{hydroDraft, morphineDraft}, w.fhirBase, user, nil)))
		if len(got) != 1 || got[0].indicator != "critical" || !strings.Contains(got[0].summary, total(want)) {
			t.Fatalf("cards %+v, want one critical with %s", got, total(want))
		}
		// A prefetch key sent as null means "not prefetched": fetched the same way.
		req := hookRequest(t, "order-sign.json", "p1", []map[string]any{hydroDraft, morphineDraft}, w.fhirBase, user, map[string]any{"medications": nil})
		if got := cards(t, w.call(t, w.remoteCDS, req)); len(got) != 1 || !strings.Contains(got[0].summary, total(want)) {
			t.Fatalf("null prefetch: %+v", got)
		}
	})

	t.Run("order-select: only the selected draft decides whether to speak", func(t *testing.T) {
		amox := example(t, "order-select.json")["context"].(map[string]any)["draftOrders"].(map[string]any)["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)
		amox["subject"] = map[string]any{"reference": "Patient/p1"}
		req := hookRequest(t, "order-select.json", "p1", []map[string]any{amox, hydroDraft}, w.fhirBase, user, nil)
		if got := cards(t, w.call(t, w.root, req)); len(got) != 0 {
			t.Errorf("amoxicillin selected: %+v", got)
		}
		// Selecting the opioid projects both drafts... of which amoxicillin adds nothing.
		req["context"].(map[string]any)["selections"] = []any{"MedicationRequest/draft-hydro"}
		got := cards(t, w.call(t, w.root, req))
		if len(got) != 1 || !strings.Contains(got[0].summary, total(oxy+mme("hydromorphone", 2, 2, 4))) {
			t.Errorf("hydromorphone selected: %+v", got)
		}
	})

	t.Run("below 50 is info", func(t *testing.T) {
		d := medReq("draft-tramadol", "p2", "draft", "835603", "tramadol hydrochloride 50 MG Oral Tablet", 1, 6)
		want := mme("tramadol", 50, 1, 6) // 40
		got := cards(t, w.call(t, w.root, hookRequest(t, "order-sign.json", "p2", []map[string]any{d}, w.fhirBase, user, nil)))
		if len(got) != 1 || got[0].indicator != "info" || !strings.Contains(got[0].summary, total(want)) {
			t.Fatalf("cards %+v, want one info with %s", got, total(want))
		}
	})

	t.Run("benzodiazepine with an active opioid is critical", func(t *testing.T) {
		d := medReq("draft-alprazolam", "p3", "draft", "596", "alprazolam 0.5 MG Oral Tablet", 1, 8)
		got := cards(t, w.call(t, w.root, hookRequest(t, "order-sign.json", "p3", []map[string]any{d}, w.fhirBase, user, nil)))
		if len(got) != 1 || got[0].indicator != "critical" || !strings.Contains(got[0].summary, "benzodiazepine") ||
			!strings.Contains(got[0].summary, total(oxy)) || !strings.Contains(got[0].detail, "alprazolam") {
			t.Fatalf("cards %+v, want one critical overlap card with %s (the stopped morphine not counted)", got, total(oxy))
		}
	})

	t.Run("unknown drug: a card saying it cannot compute", func(t *testing.T) {
		d := medReq("draft-unknown", "p2", "draft", "9999999", "oxycodone 7.5 MG Oral Tablet", 1, 6)
		got := cards(t, w.call(t, w.remoteCDS, hookRequest(t, "order-sign.json", "p2", []map[string]any{d}, "", "", map[string]any{"medications": bundle()})))
		if len(got) == 0 || got[len(got)-1].indicator != "warning" || !strings.Contains(got[len(got)-1].summary, "Cannot compute") {
			t.Fatalf("cards %+v, want a warning that the MME cannot be computed", got)
		}
	})

	t.Run("authorization is not bypassed for this server", func(t *testing.T) {
		// A token for patient p2 cannot read p1's prescriptions: no prefetch, no answer.
		// This server checks the token before anything else: 403.
		other := w.iss.token(t, w.fhirBase, "patient/*.rs", "p2")
		r := w.call(t, w.root, hookRequest(t, "order-sign.json", "p1", []map[string]any{hydroDraft}, w.fhirBase, other, nil))
		if r.status != 403 || !strings.Contains(string(r.body), "bound to another patient") {
			t.Errorf("patient token for another patient: %d %s, want 403", r.status, r.body)
		}
		r = w.call(t, w.root, hookRequest(t, "order-sign.json", "p1", []map[string]any{hydroDraft}, w.fhirBase, "not-a-token", nil))
		if r.status != 403 || !strings.Contains(string(r.body), "access_token is not valid") {
			t.Errorf("invalid fhirAuthorization token: %d %s, want 403", r.status, r.body)
		}
		// A user token whose scopes do not reach the data: the read is refused, 412.
		noMeds := w.iss.token(t, w.fhirBase, "user/Observation.rs", "")
		r = w.call(t, w.root, hookRequest(t, "order-sign.json", "p1", []map[string]any{hydroDraft}, w.fhirBase, noMeds, nil))
		if r.status != 412 {
			t.Errorf("token without MedicationRequest scope: %d %s, want 412", r.status, r.body)
		}
		// Over HTTP the FHIR server refuses it the same way.
		r = w.call(t, w.remoteCDS, hookRequest(t, "order-sign.json", "p1", []map[string]any{hydroDraft}, w.fhirBase, other, nil))
		if r.status != 412 {
			t.Errorf("remote, patient token for another patient: %d %s, want 412", r.status, r.body)
		}
	})

	t.Run("no prefetch and no fhirServer: 412", func(t *testing.T) {
		r := w.call(t, w.remoteCDS, hookRequest(t, "order-sign.json", "p1", []map[string]any{hydroDraft}, "", "", nil))
		if r.status != 412 || !strings.Contains(string(r.body), "prefetch") {
			t.Errorf("%d %s", r.status, r.body)
		}
	})
}

func TestDiscovery(t *testing.T) {
	w := newWorld(t, false)
	m := w.do(t, "GET", w.root+"/cds-services", "", "").expect(t, 200).json(t)
	hooks := map[string]bool{}
	for _, x := range m["services"].([]any) {
		s := x.(map[string]any)
		if s["id"] != "opioid-mme" || s["description"] == "" {
			t.Errorf("service %v", s)
		}
		hooks[s["hook"].(string)] = true
		pf := s["prefetch"].(map[string]any)
		if pf["patient"] != "Patient/{{context.patientId}}" || !strings.HasPrefix(pf["medications"].(string), "MedicationRequest?patient={{context.patientId}}&status=active") {
			t.Errorf("prefetch %v", pf)
		}
	}
	if !hooks["order-select"] || !hooks["order-sign"] || len(hooks) != 2 {
		t.Errorf("hooks %v", hooks)
	}
}

func TestClientAuthentication(t *testing.T) {
	w := newWorld(t, false)
	w.put(t, map[string]any{"resourceType": "Patient", "id": "p1"})
	u := w.root + "/cds-services/opioid-mme"
	req := hookRequest(t, "order-sign.json", "p1", nil, "", "", map[string]any{"medications": bundle()})
	body := func(m map[string]any) string { return fmt.Sprint(string(must(jsonMarshal(m)))) }
	ok := body(req)

	if r := w.do(t, "POST", u, ok, w.client.jwt(t, u, nil)); r.status != 200 {
		t.Fatalf("a valid call: %d %s", r.status, r.body)
	}
	stranger := newCDSClient(t) // same issuer name, keys nobody trusts
	replayed := w.client.jwt(t, u, nil)
	w.do(t, "POST", u, ok, replayed).expect(t, 200)
	for name, tok := range map[string]string{
		"none":           "",
		"not a JWT":      "abc",
		"wrong audience": w.client.jwt(t, w.root+"/cds-services/other", nil),
		"expired":        w.client.jwt(t, u, func(c map[string]any) { c["exp"] = time.Now().Add(-3 * time.Minute).Unix() }),
		"too long-lived": w.client.jwt(t, u, func(c map[string]any) { c["exp"] = time.Now().Add(time.Hour).Unix() }),
		"no jti":         w.client.jwt(t, u, func(c map[string]any) { delete(c, "jti") }),
		"unknown issuer": w.client.jwt(t, u, func(c map[string]any) { c["iss"] = "https://evil.example" }),
		"untrusted key":  stranger.jwt(t, u, nil),
		"replayed":       replayed,
	} {
		r := w.do(t, "POST", u, ok, tok)
		if r.status != 401 || r.header.Get("WWW-Authenticate") == "" || !strings.Contains(string(r.body), `"error":"unauthorized"`) {
			t.Errorf("%s: %d %s %v, want 401 with a JSON body", name, r.status, r.body, r.header)
		}
	}

	bad := func(mod func(m map[string]any)) string {
		m := hookRequest(t, "order-sign.json", "p1", nil, "", "", map[string]any{"medications": bundle()})
		mod(m)
		return body(m)
	}
	for name, c := range map[string]struct {
		body string
		want int
	}{
		"not JSON":          {"{", 400},
		"other hook":        {bad(func(m map[string]any) { m["hook"] = "patient-view" }), 400},
		"no hookInstance":   {bad(func(m map[string]any) { delete(m, "hookInstance") }), 400},
		"no patientId":      {bad(func(m map[string]any) { delete(m["context"].(map[string]any), "patientId") }), 400},
		"draftOrders array": {bad(func(m map[string]any) { m["context"].(map[string]any)["draftOrders"] = []any{} }), 400},
		"medications not a Bundle": {bad(func(m map[string]any) {
			m["prefetch"] = map[string]any{"medications": map[string]any{"resourceType": "Patient"}}
			m["context"].(map[string]any)["draftOrders"] = bundle(medReq("d", "p1", "draft", "1049621", "oxycodone", 1, 6))
		}), 400},
		"bad fhirServer": {bad(func(m map[string]any) { m["fhirServer"] = "ftp://x" }), 400},
	} {
		r := w.do(t, "POST", u, c.body, w.client.jwt(t, u, nil))
		if r.status != c.want || !strings.Contains(string(r.body), `"message"`) {
			t.Errorf("%s: %d %s, want %d with a JSON body", name, r.status, r.body, c.want)
		}
	}
	other := w.root + "/cds-services/nope"
	if r := w.do(t, "POST", other, ok, w.client.jwt(t, other, nil)); r.status != 404 {
		t.Errorf("unknown service: %d", r.status)
	}
}

func TestClientAuthOff(t *testing.T) {
	w := newWorld(t, true)
	req := hookRequest(t, "order-sign.json", "p1", nil, "", "", map[string]any{"medications": bundle()})
	r := w.do(t, "POST", w.root+"/cds-services/opioid-mme", string(must(jsonMarshal(req))), "")
	if r.status != 200 || r.header.Get("X-Anodyne-CDS-Client-Auth") == "" {
		t.Errorf("client auth off: %d %v", r.status, r.header)
	}
}

// TestFHIRServerAllowList: a client limited to its own FHIR server cannot
// have the service fetch (with its token) from anywhere else.
func TestFHIRServerAllowList(t *testing.T) {
	w := newWorld(t, false)
	w.put(t, map[string]any{"resourceType": "Patient", "id": "p1"})
	_, _, tab := parts(t)
	ts := httptest.NewUnstartedServer(nil)
	root := "http://" + ts.Listener.Addr().String()
	svc, err := cdshooks.New(context.Background(), cdshooks.Config{BaseURL: root, Table: tab, Replay: memReplay{m: map[string]bool{}},
		Clients: []cdshooks.TrustedClient{{Issuer: w.client.iss, JWKSURL: w.client.jwks, FHIRServers: []string{"https://fhir.ehr.example.org/r4/"}}}})
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	svc.Register(e)
	ts.Config.Handler = e
	ts.Start()
	t.Cleanup(ts.Close)
	user := w.iss.token(t, w.fhirBase, "user/*.rs", "")
	d := medReq("d", "p1", "draft", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", 1, 6)
	r := w.call(t, root, hookRequest(t, "order-sign.json", "p1", []map[string]any{d}, w.fhirBase, user, nil))
	if r.status != 412 || !strings.Contains(string(r.body), "not one this CDS client may") {
		t.Errorf("fetch from a server the client may not name: %d %s", r.status, r.body)
	}
	// With the data prefetched nothing is fetched: answered.
	req := hookRequest(t, "order-sign.json", "p1", []map[string]any{d}, w.fhirBase, user, map[string]any{"medications": bundle()})
	if got := cards(t, w.call(t, root, req)); len(got) != 1 || !strings.Contains(got[0].summary, total(mme("oxycodone", 5, 1, 6))) {
		t.Errorf("with prefetch: %+v", got)
	}
}

// memReplay is a replay store for a service outside the FHIR server.
type memReplay struct {
	m map[string]bool
}

func (r memReplay) PutIfAbsent(_ context.Context, key string, _ []byte, _ time.Duration) (bool, error) {
	if r.m[key] {
		return false, nil
	}
	r.m[key] = true
	return true, nil
}
