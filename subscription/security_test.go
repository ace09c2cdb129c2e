package subscription_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
)

const patientTag = "http://anodyne-fhir.org/fhir/CodeSystem/subscription-patient"

func tagsOf(res map[string]any) []string {
	var out []string
	tags, _ := get(res, "meta", "tag").([]any)
	for _, t := range tags {
		if get(t, "system") == patientTag {
			out = append(out, get(t, "code").(string))
		}
	}
	return out
}

func headersOf(res map[string]any) []string {
	var out []string
	hs, _ := get(res, "channel", "header").([]any)
	for _, h := range hs {
		out = append(out, h.(string))
	}
	return out
}

func withID(body, id string) string {
	return strings.Replace(body, `{"resourceType":"Subscription",`, `{"resourceType":"Subscription","id":"`+id+`",`, 1)
}

// TestPatientAppSubscriptionAndMasking: an app holding only patient/
// scopes subscribes for its patient (tagged by the server, hears only that
// patient, sees only its own Subscriptions); channel credentials are
// stored and sent to the receiver but every reader gets them masked (the
// secret is shown to the owner only), and a round trip of the masked
// values keeps the stored ones.
func TestPatientAppSubscriptionAndMasking(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			rcv := newReceiver(t)
			const appScopes = "patient/Observation.rs patient/Subscription.cruds"
			ps := map[string]*auth.Principal{
				"ehr":     {ClientID: "ehr", Subject: "ehr", Scopes: auth.ParseScopes("system/*.cruds")},
				"app":     {ClientID: "app", Subject: "u1", Scopes: auth.ParseScopes(appScopes), Patient: "p1"},
				"app2":    {ClientID: "app2", Subject: "u2", Scopes: auth.ParseScopes(appScopes), Patient: "p2"},
				"noscope": {ClientID: "noscope", Subject: "u3", Scopes: auth.ParseScopes("patient/Observation.rs"), Patient: "p1"},
				"reader":  {ClientID: "reader", Subject: "admin", Scopes: auth.ParseScopes("system/Subscription.rs")},
			}
			s := start(t, be.Open(t), ps, nil)
			body := subscriptionJSON("Observation?code="+painCode, rcv.ts.URL+"/app", "application/fhir+json")
			// A forged tag for another patient is the client's word: replaced.
			forged := strings.Replace(body, `"status":"requested",`, `"status":"requested","meta":{"tag":[{"system":"`+patientTag+`","code":"p2"}]},`, 1)
			sub := s.do(t, "app", "POST", "/Subscription", forged).Expect(t, http.StatusCreated).JSON(t)
			id := sub["id"].(string)
			if tags := tagsOf(sub); len(tags) != 1 || tags[0] != "p1" {
				t.Errorf("patient tags %v, want [p1]", tags)
			}
			if h := headersOf(sub); len(h) != 1 || h[0] != "Authorization: [masked]" {
				t.Errorf("headers in the create answer %v", h)
			}
			secret := secretOf(t, sub)
			if secret == "[masked]" {
				t.Fatal("the owner does not see its secret")
			}
			s.do(t, "noscope", "POST", "/Subscription", body).Expect(t, http.StatusForbidden)
			s.do(t, "app", "POST", "/Subscription", subscriptionJSON("Flag?patient=Patient/p1", rcv.ts.URL+"/flag", "")).Expect(t, http.StatusForbidden)
			ehrSub := s.do(t, "ehr", "POST", "/Subscription", strings.Replace(strings.Replace(forged, `"code":"p2"`, `"code":"p1"`, 1), "/app", "/ehr", 1)).Expect(t, http.StatusCreated).JSON(t)
			if tags := tagsOf(ehrSub); len(tags) != 0 {
				t.Errorf("an EHR's Subscription carries patient tags %v", tags)
			}

			// Who sees what.
			if b := s.do(t, "app", "GET", "/Subscription", "").Expect(t, http.StatusOK).JSON(t); len(get(b, "entry").([]any)) != 1 || get(b, "entry", 0, "resource", "id") != id {
				t.Errorf("the app's search: %v", b)
			}
			s.do(t, "app", "GET", "/Subscription/"+ehrSub["id"].(string), "").Expect(t, http.StatusForbidden)
			s.do(t, "app2", "GET", "/Subscription/"+id, "").Expect(t, http.StatusForbidden)
			s.do(t, "app2", "PUT", "/Subscription/"+id, withID(body, id)).Expect(t, http.StatusForbidden)
			s.do(t, "app2", "DELETE", "/Subscription/"+id, "").Expect(t, http.StatusForbidden)
			s.do(t, "app", "PUT", "/Subscription/"+ehrSub["id"].(string), withID(body, ehrSub["id"].(string))).Expect(t, http.StatusForbidden)
			if b := s.do(t, "app2", "GET", "/Subscription", "").Expect(t, http.StatusOK).JSON(t); get(b, "entry") != nil {
				t.Errorf("another patient's app sees %v", get(b, "entry"))
			}
			seen := s.do(t, "reader", "GET", "/Subscription/"+id, "").Expect(t, http.StatusOK).JSON(t)
			if h := headersOf(seen); len(h) != 1 || h[0] != "Authorization: [masked]" || secretOf(t, seen) != "[masked]" {
				t.Errorf("a reader sees headers %v, secret %q", h, secretOf(t, seen))
			}
			hist := s.do(t, "reader", "GET", "/Subscription/"+id+"/_history", "").Expect(t, http.StatusOK)
			if strings.Contains(string(hist.Body), "receiver-token") || strings.Contains(string(hist.Body), secret) {
				t.Error("history shows the stored credentials")
			}
			search := s.do(t, "reader", "GET", "/Subscription?_id="+id, "").Expect(t, http.StatusOK)
			if strings.Contains(string(search.Body), "receiver-token") || strings.Contains(string(search.Body), secret) {
				t.Error("search shows the stored credentials")
			}

			// The owner writes back what it read: the stored values stay.
			mine := s.do(t, "app", "GET", "/Subscription/"+id, "").Expect(t, http.StatusOK).JSON(t)
			mine["reason"] = "pain scores, renamed"
			rt, _ := json.Marshal(mine)
			s.do(t, "app", "PUT", "/Subscription/"+id, string(rt)).Expect(t, http.StatusOK)
			bad := strings.Replace(withID(body, id), `"header":["Authorization: Bearer receiver-token"]`, `"header":["X-Other: [masked]"]`, 1)
			s.do(t, "app", "PUT", "/Subscription/"+id, bad).Expect(t, http.StatusUnprocessableEntity)

			for _, w := range []struct{ id, patient string }{{"a1", "p1"}, {"b1", "p2"}, {"a2", "p1"}} {
				s.do(t, "ehr", "PUT", "/Observation/"+w.id, observation(w.id, painCode, w.patient, 8)).Expect(t, http.StatusCreated)
			}
			got := rcv.wait(t, "/app", 2, 10*time.Second, 500*time.Millisecond)
			if p := paths(got); len(p) != 2 || p[0] != "PUT /app/Observation/a1" || p[1] != "PUT /app/Observation/a2" {
				t.Errorf("the patient app heard %v, want its patient's a1 and a2", p)
			}
			for _, d := range got {
				checkSigned(t, d, secret, "Subscription/"+id)
			}
		})
	}
}

// statusIDs are the Subscription ids of a $status searchset, sorted.
func statusIDs(t *testing.T, b map[string]any) []string {
	t.Helper()
	if b["type"] != "searchset" {
		t.Fatalf("$status answered %v", b)
	}
	var out []string
	entries, _ := get(b, "entry").([]any)
	for _, e := range entries {
		st := get(e, "resource")
		if param(st, "type") != "query-status" {
			t.Errorf("entry of type %v", param(st, "type"))
		}
		ref, _ := get(param(st, "subscription"), "reference").(string)
		out = append(out, ref[strings.LastIndex(ref, "/")+1:])
	}
	if n, _ := b["total"].(json.Number).Int64(); int(n) != len(out) {
		t.Errorf("total %v, %d entries", b["total"], len(out))
	}
	slices.Sort(out)
	return out
}

// TestTypeLevelStatus: GET and POST [base]/Subscription/$status answer
// the status of the Subscriptions named by id (repeated or
// comma-separated), or of all, that the caller may read (a patient/ app
// only its patient's), filtered by status; bad ids or statuses are 400;
// it works as a batch entry.
func TestTypeLevelStatus(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			rcv := newReceiver(t)
			const appScopes = "patient/Observation.rs patient/Subscription.cruds"
			ps := map[string]*auth.Principal{
				"ehr":  {ClientID: "ehr", Subject: "ehr", Scopes: auth.ParseScopes("system/*.cruds")},
				"app":  {ClientID: "app", Subject: "u1", Scopes: auth.ParseScopes(appScopes), Patient: "p1"},
				"app2": {ClientID: "app2", Subject: "u2", Scopes: auth.ParseScopes(appScopes), Patient: "p2"},
				"none": {ClientID: "none", Subject: "u3", Scopes: auth.ParseScopes("patient/Observation.rs"), Patient: "p1"},
			}
			s := start(t, be.Open(t), ps, nil)
			a := s.do(t, "app", "POST", "/Subscription", subscriptionJSON("Observation?code="+painCode, rcv.ts.URL+"/a", "")).Expect(t, http.StatusCreated).JSON(t)["id"].(string)
			b := s.do(t, "ehr", "POST", "/Subscription", subscriptionJSON("Observation?code="+pulseCode, rcv.ts.URL+"/b", "")).Expect(t, http.StatusCreated).JSON(t)["id"].(string)
			both := []string{a, b}
			slices.Sort(both)
			for _, c := range []struct {
				as, query string
				want      []string
			}{
				{"ehr", "", both},
				{"ehr", "?id=" + a, []string{a}},
				{"ehr", "?id=" + a + "," + b + "&id=nope", both},
				{"ehr", "?id=nope", nil},
				{"ehr", "?status=off", nil},
				{"ehr", "?status=active,requested", both},
				{"ehr", "?status=off&status=active&id=" + b, []string{b}},
				{"app", "", []string{a}},
				{"app", "?id=" + b, nil},
				{"app2", "", nil},
			} {
				got := statusIDs(t, s.do(t, c.as, "GET", "/Subscription/$status"+c.query, "").Expect(t, http.StatusOK).JSON(t))
				if !slices.Equal(got, c.want) {
					t.Errorf("%s GET $status%s: %v, want %v", c.as, c.query, got, c.want)
				}
			}
			s.do(t, "none", "GET", "/Subscription/$status", "").Expect(t, http.StatusForbidden)
			s.do(t, "ehr", "GET", "/Subscription/$status?status=bogus", "").Expect(t, http.StatusBadRequest)
			s.do(t, "ehr", "GET", "/Subscription/$status?id=no!such", "").Expect(t, http.StatusBadRequest)
			post := s.do(t, "ehr", "POST", "/Subscription/$status", "id="+b, "Content-Type: application/x-www-form-urlencoded").Expect(t, http.StatusOK).JSON(t)
			if got := statusIDs(t, post); !slices.Equal(got, []string{b}) {
				t.Errorf("POST $status id=%s: %v", b, got)
			}
			batch := s.do(t, "app", "POST", "", `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Subscription/$status"}}]}`).Expect(t, http.StatusOK).JSON(t)
			if st := get(batch, "entry", 0, "response", "status"); st == nil || !strings.HasPrefix(st.(string), "200") {
				t.Fatalf("batch entry: %v", batch)
			}
			if got := statusIDs(t, get(batch, "entry", 0, "resource").(map[string]any)); !slices.Equal(got, []string{a}) {
				t.Errorf("app's batch $status: %v, want [%s]", got, a)
			}
		})
	}
}
