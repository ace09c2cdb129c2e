package smart_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/anodyne-fhir/anodyne/auth"
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

// observedSink passes events on to a real sink and counts the ones that
// reach it outside a data Commit (the middleware's own records).
type observedSink struct {
	auth.AuditPreparer
	separate atomic.Int64
}

func (o *observedSink) RecordAudit(ctx context.Context, ev auth.AuditEvent) error {
	o.separate.Add(1)
	return o.AuditPreparer.RecordAudit(ctx, ev)
}

// TestWriteAuditInSameCommit checks that a write's AuditEvent is stored by
// the Commit that stores the data (not by a separate record afterwards),
// once per request, and that a refused write leaves its failure record
// and no success record.
func TestWriteAuditInSameCommit(t *testing.T) {
	for _, grouped := range []bool{false, true} {
		t.Run(map[bool]string{false: "store", true: "group-commit"}[grouped], func(t *testing.T) {
			obs := &observedSink{}
			e := newEnv(t, func(c *envConfig) {
				c.groupAudit = grouped
				c.wrapSink = func(s auth.AuditSink) auth.AuditSink {
					obs.AuditPreparer = s.(auth.AuditPreparer)
					return obs
				}
			})
			w := newSigner(t, jose.ES384)
			e.addClient(smart.Client{ID: "writer", Type: smart.ClientAsymmetric, JWKS: w.jwks(), Scopes: "system/*.cruds"}, "")
			admin := newSigner(t, jose.RS384)
			e.addClient(smart.Client{ID: "auditor", Type: smart.ClientAsymmetric, JWKS: admin.jwks(), Scopes: "system/AuditEvent.rs"}, "")
			wt := e.backendToken("writer", w, "system/*.cruds")
			obsJSON := func(id, status string) map[string]any {
				return map[string]any{"resourceType": "Observation", "id": id, "status": status, "code": map[string]any{"text": "pain"}, "subject": map[string]any{"reference": "Patient/a"}}
			}

			if st, body, _ := e.fhirDo(http.MethodPut, "/Observation/w1", wt, obsJSON("w1", "final")); st != http.StatusCreated {
				t.Fatalf("create: %d %v", st, body)
			}
			if n := obs.separate.Load(); n != 0 {
				t.Errorf("a successful write was also recorded outside its Commit (%d records)", n)
			}
			req := func(method, path string, body any, hdr string) int {
				b, _ := json.Marshal(body)
				r, _ := http.NewRequest(method, e.fhirBase+path, bytes.NewReader(b))
				r.Header.Set("Content-Type", "application/fhir+json")
				r.Header.Set("Authorization", "Bearer "+wt)
				r.Header.Set("If-Match", hdr)
				resp, err := http.DefaultClient.Do(r)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			if st := req(http.MethodPut, "/Observation/w1", obsJSON("w1", "amended"), `W/"9"`); st != http.StatusPreconditionFailed {
				t.Fatalf("stale update = %d, want 412", st)
			}
			if n := obs.separate.Load(); n != 1 {
				t.Errorf("the refused write left %d separate records, want 1", n)
			}
			tx := map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": []any{
				map[string]any{"resource": obsJSON("w2", "final"), "request": map[string]any{"method": "PUT", "url": "Observation/w2"}},
				map[string]any{"resource": obsJSON("w3", "final"), "request": map[string]any{"method": "PUT", "url": "Observation/w3"}},
			}}
			if st, body, _ := e.fhirDo(http.MethodPost, "", wt, tx); st != http.StatusOK {
				t.Fatalf("transaction: %d %v", st, body)
			}

			// A batch: each entry is recorded as a request of its own (a
			// write in its own Commit), besides the Bundle's record.
			before := obs.separate.Load()
			batch := map[string]any{"resourceType": "Bundle", "type": "batch", "entry": []any{
				map[string]any{"resource": obsJSON("w4", "final"), "request": map[string]any{"method": "PUT", "url": "Observation/w4"}},
				map[string]any{"request": map[string]any{"method": "GET", "url": "Observation/w4"}},
				map[string]any{"resource": obsJSON("w5", "final"), "request": map[string]any{"method": "PUT", "url": "Observation/w5", "ifMatch": `W/"3"`}},
			}}
			if st, body, _ := e.fhirDo(http.MethodPost, "", wt, batch); st != http.StatusOK {
				t.Fatalf("batch: %d %v", st, body)
			}
			// The read, the failed update and the Bundle itself.
			if n := obs.separate.Load() - before; n != 3 {
				t.Errorf("the batch left %d records outside Commits, want 3", n)
			}

			at := e.backendToken("auditor", admin, "system/AuditEvent.rs")
			st, bundle, _ := e.fhirDo(http.MethodGet, "/AuditEvent?_count=100", at, nil)
			if st != http.StatusOK {
				t.Fatalf("audit search = %d %v", st, bundle)
			}
			count := map[string]int{}
			for _, en := range entryList(bundle) {
				r := en.(map[string]any)["resource"].(map[string]any)
				b, _ := json.Marshal(r)
				sub := r["subtype"].([]any)[0].(map[string]any)["code"].(string)
				for _, ref := range []string{"Observation/w1", "Observation/w2", "Observation/w3", "Observation/w4", "Observation/w5"} {
					if strings.Contains(string(b), `"reference":"`+ref+`"`) {
						count[fmt.Sprintf("%s %s %s", sub, ref, r["outcome"])]++
					}
				}
				if sub == "update" && r["outcome"] == "4" && !strings.Contains(string(b), "Observation/w5") {
					count["update failed"]++
				}
			}
			want := map[string]int{
				"update Observation/w1 0":            1, // the create, in its Commit
				"update Observation/w1 4":            1, // the 412, by the middleware
				"update failed":                      1, // and no other failure
				"batch/transaction Observation/w2 0": 1, // both writes in one record
				"batch/transaction Observation/w3 0": 1,
				"update Observation/w4 0":            1, // the batch entry, in its Commit
				"read Observation/w4 0":              1, // the batch's read entry
				"update Observation/w5 4":            1, // the batch's failed entry
			}
			if !maps.Equal(count, want) {
				t.Errorf("audit records %v, want %v", count, want)
			}
		})
	}
}

func entryList(b map[string]any) []any {
	l, _ := b["entry"].([]any)
	return l
}
