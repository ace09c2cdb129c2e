package auth

import (
	"context"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		method, path                 string
		interaction, action, typ, id string
	}{
		{"GET", "Observation/1", "read", "R", "Observation", "1"},
		{"GET", "Observation/1/_history/2", "vread", "R", "Observation", "1"},
		{"GET", "Observation/1/_history", "history-instance", "R", "Observation", "1"},
		{"GET", "Observation/_history", "history-type", "R", "Observation", ""},
		{"GET", "_history", "history-system", "R", "", ""},
		{"GET", "Observation", "search-type", "E", "Observation", ""},
		{"POST", "Observation/_search", "search-type", "E", "Observation", ""},
		{"POST", "Observation", "create", "C", "Observation", ""},
		{"PUT", "Observation/1", "update", "U", "Observation", "1"},
		{"PATCH", "Observation/1", "patch", "U", "Observation", "1"},
		{"DELETE", "Observation/1", "delete", "D", "Observation", "1"},
		{"POST", "", "batch/transaction", "E", "", ""},
		{"GET", "Patient/1/$everything", "operation", "E", "Patient", "1"},
		{"POST", "$export", "operation", "E", "", ""},
	}
	for _, tt := range tests {
		i, a, typ, id := classify(tt.method, tt.path)
		if i != tt.interaction || a != tt.action || typ != tt.typ || id != tt.id {
			t.Errorf("classify(%s %s) = %s %s %s %s", tt.method, tt.path, i, a, typ, id)
		}
	}
}

func TestAuditEventResource(t *testing.T) {
	ctx := WithPrincipal(context.Background(), &Principal{ClientID: "app", FHIRUser: "Practitioner/1", Patient: "p1"})
	ev := NewAuditEvent(ctx, "read", "R", "Observation")
	ev.IDs = []string{"o1"}
	for _, tt := range []struct {
		status  int
		outcome string
	}{{200, "0"}, {403, "4"}, {500, "8"}} {
		ev.Outcome = tt.status
		r := ev.Resource()
		if r["outcome"] != tt.outcome {
			t.Errorf("status %d: outcome %v, want %s", tt.status, r["outcome"], tt.outcome)
		}
		if n := len(r["agent"].([]any)); n != 2 {
			t.Errorf("agents = %d, want client and user", n)
		}
		if n := len(r["entity"].([]any)); n != 2 {
			t.Errorf("entities = %d, want patient and resource", n)
		}
	}
}

// TestSecurityAuditEventResource: a Category replaces the RESTful type
// and interaction subtype; Description becomes outcomeDesc.
func TestSecurityAuditEventResource(t *testing.T) {
	ev := AuditEvent{Action: "E", Outcome: 401, User: "alice", RemoteAddr: "10.0.0.7", Description: "locked",
		Category: AuditCategory{
			Type:     AuditCoding{System: "http://dicom.nema.org/resources/ontology/DCM", Code: "110114", Display: "User Authentication"},
			Subtypes: []AuditCoding{{System: "http://dicom.nema.org/resources/ontology/DCM", Code: "110122"}},
		}}
	r := ev.Resource()
	typ := r["type"].(map[string]any)
	subs := r["subtype"].([]any)
	if typ["code"] != "110114" || typ["display"] != "User Authentication" || len(subs) != 1 ||
		subs[0].(map[string]any)["code"] != "110122" || subs[0].(map[string]any)["display"] != nil {
		t.Errorf("type %v subtype %v", typ, subs)
	}
	if r["outcomeDesc"] != "locked" || r["outcome"] != "4" {
		t.Errorf("outcome %v, outcomeDesc %v", r["outcome"], r["outcomeDesc"])
	}
	rest := AuditEvent{Interaction: "read", Action: "R", Outcome: 200}.Resource()
	if rest["type"].(map[string]any)["code"] != "rest" || rest["outcomeDesc"] != nil {
		t.Errorf("a RESTful event changed: %v", rest)
	}
}
