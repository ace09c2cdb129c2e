package smart_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/anodyne-fhir/anodyne/auth/smart"
)

// TestAuditTrail checks that FHIR requests leave AuditEvents in the store,
// searchable by an administrator's explicit scope and by nobody else.
func TestAuditTrail(t *testing.T) {
	e := newEnv(t)
	e.seed()
	app := newSigner(t, jose.ES384)
	e.addClient(smart.Client{ID: "reader", Type: smart.ClientAsymmetric, JWKS: app.jwks(), Scopes: "system/*.rs"}, "")
	admin := newSigner(t, jose.RS384)
	e.addClient(smart.Client{ID: "auditor", Type: smart.ClientAsymmetric, JWKS: admin.jwks(), Scopes: "system/AuditEvent.rs"}, "")

	rt := e.backendToken("reader", app, "system/*.rs")
	if st, _, _ := e.fhirDo(http.MethodGet, "/Patient/b", rt, nil); st != 200 {
		t.Fatalf("read = %d", st)
	}
	if st, _, _ := e.fhirDo(http.MethodPut, "/Patient/b", rt, map[string]any{"resourceType": "Patient", "id": "b"}); st != http.StatusForbidden {
		t.Fatalf("refused update = %d", st)
	}
	// A wildcard scope does not open the audit trail.
	if st, body, _ := e.fhirDo(http.MethodGet, "/AuditEvent", rt, nil); st != http.StatusForbidden || len(returned(body)) != 0 {
		t.Errorf("AuditEvent with system/*.rs = %d %v", st, returned(body))
	}

	at := e.backendToken("auditor", admin, "system/AuditEvent.rs")
	st, bundle, _ := e.fhirDo(http.MethodGet, "/AuditEvent?_count=100", at, nil)
	if st != 200 {
		t.Fatalf("audit search = %d %v", st, bundle)
	}
	var read, refused bool
	for _, en := range bundle["entry"].([]any) {
		r := en.(map[string]any)["resource"].(map[string]any)
		b, _ := json.Marshal(r)
		s := string(b)
		if !strings.Contains(s, `"value":"reader"`) {
			continue
		}
		sub := r["subtype"].([]any)[0].(map[string]any)["code"]
		switch {
		case sub == "read" && r["outcome"] == "0" && strings.Contains(s, `"reference":"Patient/b"`):
			read = true
		case sub == "update" && r["outcome"] == "4":
			refused = true
		}
	}
	if !read || !refused {
		t.Errorf("audit trail lacks the read (%v) or the refused update (%v): %v", read, refused, bundle)
	}
}
