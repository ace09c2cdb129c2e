package cdshooks_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func (w *world) feedback(t testing.TB, cdsRoot string, body any) response {
	t.Helper()
	raw, _ := json.Marshal(body)
	u := cdsRoot + "/cds-services/opioid-mme/feedback"
	return w.do(t, "POST", u, string(raw), w.client.jwt(t, u, nil))
}

func item(card, outcome string, accepted ...string) map[string]any {
	m := map[string]any{"card": card, "outcome": outcome, "outcomeTimestamp": time.Now().UTC().Format(time.RFC3339)}
	if len(accepted) > 0 {
		var list []any
		for _, a := range accepted {
			list = append(list, map[string]any{"id": a})
		}
		m["acceptedSuggestions"] = list
	}
	return m
}

// feedbackEvents returns the AuditEvents of CDS feedback about patient.
func (w *world) feedbackEvents(t *testing.T, patient string) []map[string]any {
	t.Helper()
	// The audit trail opens only to a scope naming AuditEvent.
	auditor := w.iss.token(t, w.fhirBase, "system/AuditEvent.rs", "")
	b := w.do(t, "GET", w.fhirBase+"/AuditEvent?patient="+patient+"&_count=50", "", auditor).expect(t, 200).json(t)
	var out []map[string]any
	entries, _ := b["entry"].([]any)
	for _, e := range entries {
		res := e.(map[string]any)["resource"].(map[string]any)
		if typ, _ := res["type"].(map[string]any); typ["code"] == "feedback" {
			out = append(out, res)
		}
	}
	return out
}

func details(ev map[string]any) map[string][]string {
	out := map[string][]string{}
	for _, en := range ev["entity"].([]any) {
		for _, d := range fmtList(en.(map[string]any)["detail"]) {
			dm := d.(map[string]any)
			out[dm["type"].(string)] = append(out[dm["type"].(string)], dm["valueString"].(string))
		}
	}
	return out
}

const ovSystem = "http://anodyne-fhir.org/fhir/CodeSystem/cds-override-reason"

func fmtList(v any) []any { l, _ := v.([]any); return l }

func TestFeedback(t *testing.T) {
	w := newWorld(t, false)
	w.put(t, map[string]any{"resourceType": "Patient", "id": "p1"})
	w.put(t, medReq("oxy1", "p1", "active", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", 1, 6))
	user := w.iss.token(t, w.fhirBase, "user/*.rs", "")
	hydro := medReq("draft-hydro", "p1", "draft", "897696", "hydromorphone hydrochloride 2 MG Oral Tablet", 2, 4)
	cs := fullCards(t, w.call(t, w.root, hookRequest(t, "order-sign.json", "p1", []map[string]any{hydro}, w.fhirBase, user, nil)))
	card := cs[0]["uuid"].(string)
	_, _ = action(t, suggestionsOf(t, cs[0]), "create")
	var naloxone string
	for _, s := range suggestionsOf(t, cs[0]) {
		if s.actions[0]["type"] == "create" {
			naloxone = s.uuid
		}
	}

	accepted := item(card, "accepted", naloxone)
	w.feedback(t, w.root, map[string]any{"feedback": []any{accepted}}).expect(t, 200)
	evs := w.feedbackEvents(t, "p1")
	if len(evs) != 1 {
		t.Fatalf("%d feedback events, want 1", len(evs))
	}
	d := details(evs[0])
	if d["outcome"][0] != "accepted" || len(d["acceptedSuggestion"]) != 1 || d["acceptedSuggestion"][0] != naloxone || d["hook"][0] != "order-sign" {
		t.Errorf("event details: %v", d)
	}
	valid(t, "the feedback AuditEvent", evs[0])

	t.Run("a retry records nothing twice", func(t *testing.T) {
		w.feedback(t, w.root, map[string]any{"feedback": []any{accepted}}).expect(t, 200)
		if n := len(w.feedbackEvents(t, "p1")); n != 1 {
			t.Errorf("%d events after a retry, want 1", n)
		}
	})

	t.Run("overridden with a reason", func(t *testing.T) {
		o := item(card, "overridden")
		// The reasons are the card's own.
		reasons, _ := cs[0]["overrideReasons"].([]any)
		if len(reasons) < 3 {
			t.Fatalf("a critical card offers override reasons, got %v", cs[0]["overrideReasons"])
		}
		o["overrideReason"] = map[string]any{"reason": map[string]any{"system": "http://example.org/reasons", "code": "palliative"}, "userComment": "hospice patient"}
		if r := w.feedback(t, w.root, map[string]any{"feedback": []any{o}}); r.status != 400 || !strings.Contains(string(r.body), "not one of card") {
			t.Errorf("a reason the card does not offer: %d %s", r.status, r.body)
		}
		o["overrideReason"] = map[string]any{"reason": map[string]any{"system": ovSystem, "code": "palliative"}, "userComment": "hospice patient"}
		w.feedback(t, w.root, map[string]any{"feedback": []any{o}}).expect(t, 200)
		evs := w.feedbackEvents(t, "p1")
		found := false
		for _, ev := range evs {
			d := details(ev)
			if d["outcome"][0] == "overridden" && d["userComment"][0] == "hospice patient" && d["overrideReason"][0] == ovSystem+"|palliative" {
				found = true
				valid(t, "the override AuditEvent", ev)
			}
		}
		if !found || len(evs) != 2 {
			t.Errorf("events: %v", evs)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		bad := item(card, "accepted", naloxone)
		bad["outcomeTimestamp"] = "yesterday"
		for _, tc := range []struct {
			name string
			body any
			want int
		}{
			{"unknown card", map[string]any{"feedback": []any{item("8f2e0e6a-0000-4000-8000-000000000000", "overridden")}}, 404},
			{"suggestion of no such card", map[string]any{"feedback": []any{item(card, "accepted", "not-a-suggestion")}}, 400},
			{"accepted without suggestions", map[string]any{"feedback": []any{item(card, "accepted")}}, 400},
			{"outcome unknown", map[string]any{"feedback": []any{item(card, "ignored")}}, 400},
			{"timestamp not an instant", map[string]any{"feedback": []any{bad}}, 400},
			{"empty", map[string]any{"feedback": []any{}}, 400},
			{"one bad item refuses all", map[string]any{"feedback": []any{item(card, "overridden"), item("unknown", "overridden")}}, 404},
		} {
			if r := w.feedback(t, w.root, tc.body); r.status != tc.want {
				t.Errorf("%s: %d %s, want %d", tc.name, r.status, r.body, tc.want)
			}
		}
		if n := len(w.feedbackEvents(t, "p1")); n != 2 {
			t.Errorf("%d events after refused requests, want 2", n)
		}
		raw, _ := json.Marshal(map[string]any{"feedback": []any{item(card, "overridden")}})
		if r := w.do(t, "POST", w.root+"/cds-services/opioid-mme/feedback", string(raw), ""); r.status != 401 {
			t.Errorf("without a client JWT: %d", r.status)
		}
		// A JWT for the service call is not one for its feedback... both are
		// the service's endpoints, which the spec's aud allows.
		if r := w.do(t, "POST", w.root+"/cds-services/no-such/feedback", string(raw), w.client.jwt(t, w.root+"/cds-services/no-such/feedback", nil)); r.status != 404 {
			t.Errorf("unknown service: %d", r.status)
		}
	})

	t.Run("a service outside the FHIR server keeps feedback in the KV store", func(t *testing.T) {
		prefetch := map[string]any{"medications": bundle(medReq("pre-oxy", "p9", "active", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", 1, 6))}
		d := medReq("draft-morphine", "p9", "draft", "892582", "morphine sulfate 15 MG Oral Tablet", 1, 8)
		cs := fullCards(t, w.call(t, w.remoteCDS, hookRequest(t, "order-sign.json", "p9", []map[string]any{d}, "", "", prefetch)))
		rc := cs[0]["uuid"].(string)
		// Its cards are its own: the FHIR server's service does not know them.
		if r := w.feedback(t, w.root, map[string]any{"feedback": []any{item(rc, "overridden")}}); r.status != 404 {
			t.Errorf("another service's card: %d %s", r.status, r.body)
		}
		w.feedback(t, w.remoteCDS, map[string]any{"feedback": []any{item(rc, "overridden")}}).expect(t, 200)
		keys, err := w.be.KV().List(context.Background(), "cds-hooks/feedback/")
		if err != nil || len(keys) != 1 {
			t.Fatalf("feedback keys %v (%v), want 1", keys, err)
		}
		raw, err := w.be.KV().Get(context.Background(), keys[0])
		if err != nil || !strings.Contains(string(raw), `"resourceType":"AuditEvent"`) || !strings.Contains(string(raw), "Patient/p9") {
			t.Errorf("stored feedback %s (%v)", raw, err)
		}
	})
}

func TestFHIRAuthorizationChecks(t *testing.T) {
	w := newWorld(t, false)
	w.put(t, map[string]any{"resourceType": "Patient", "id": "p1"})
	w.put(t, medReq("oxy1", "p1", "active", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", 1, 6))
	hydro := medReq("draft-hydro", "p1", "draft", "897696", "hydromorphone hydrochloride 2 MG Oral Tablet", 2, 4)
	forP1 := w.iss.token(t, w.fhirBase, "patient/*.rs", "p1")
	forP2 := w.iss.token(t, w.fhirBase, "patient/*.rs", "p2")
	prefetched := map[string]any{"medications": bundle()}
	for _, tc := range []struct {
		name     string
		token    string
		prefetch map[string]any
		mod      func(a map[string]any)
		want     int
		body     string
	}{
		{"token bound to the patient", forP1, nil, nil, 200, ""},
		{"fhirAuthorization.patient is the patient (2.0)", forP1, nil, func(a map[string]any) { a["patient"] = "p1" }, 200, ""},
		{"fhirAuthorization.patient is another patient", forP1, nil, func(a map[string]any) { a["patient"] = "p2" }, 400, "is not context.patientId"},
		{"token bound to another patient, even with prefetch", forP2, prefetched, nil, 403, "bound to another patient"},
		{"token issued to another client than subject", forP1, nil, func(a map[string]any) { a["subject"] = "some-other-app" }, 403, "not the client the access token was issued to"},
		{"expired token", w.iss.Token(t, w.fhirBase, "patient/*.rs", map[string]any{"patient": "p1", "client_id": cdsServiceClient, "exp": time.Now().Add(-time.Hour).Unix()}), prefetched, nil, 403, "not valid"},
		{"token for another audience", w.iss.Token(t, "https://elsewhere.example/fhir", "patient/*.rs", map[string]any{"patient": "p1", "client_id": cdsServiceClient}), nil, nil, 403, "not valid"},
	} {
		req := hookRequest(t, "order-sign.json", "p1", []map[string]any{hydro}, w.fhirBase, tc.token, tc.prefetch)
		if tc.mod != nil {
			tc.mod(req["fhirAuthorization"].(map[string]any))
		}
		r := w.call(t, w.root, req)
		if r.status != tc.want || !strings.Contains(string(r.body), tc.body) {
			t.Errorf("%s: %d %s, want %d with %q", tc.name, r.status, r.body, tc.want, tc.body)
		}
	}
	// A remote service cannot verify another server's token, but the
	// request's own fields are still checked.
	req := hookRequest(t, "order-sign.json", "p1", []map[string]any{hydro}, w.fhirBase, forP1, prefetched)
	req["fhirAuthorization"].(map[string]any)["patient"] = "p2"
	if r := w.call(t, w.remoteCDS, req); r.status != 400 {
		t.Errorf("remote, fhirAuthorization.patient mismatch: %d %s", r.status, r.body)
	}
}
