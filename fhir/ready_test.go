package fhir_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestReadyWhenDatabaseGone: /readyz answers 200 while the database
// answers its ping and 503 with an OperationOutcome (code transient,
// Retry-After) once it does not; /healthz, the liveness of the process,
// stays 200 throughout.
func TestReadyWhenDatabaseGone(t *testing.T) {
	b, err := sqliteOpen(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := newServer(t, b, nil)
	c.do(http.MethodGet, c.root+"/readyz", "").expect(t, http.StatusOK)
	c.do(http.MethodGet, c.root+"/healthz", "").expect(t, http.StatusOK)
	b.Close() // the database is gone: every Ping fails from now on
	r := c.do(http.MethodGet, c.root+"/readyz", "").expect(t, http.StatusServiceUnavailable)
	m := r.json(t)
	issue, _ := get(m, "issue", 0).(map[string]any)
	if m["resourceType"] != "OperationOutcome" || issue["code"] != "transient" || issue["severity"] != "error" ||
		!strings.Contains(r.header.Get("Content-Type"), "application/fhir+json") || r.header.Get("Retry-After") == "" {
		t.Errorf("/readyz with the database gone: %s %v", r.body, r.header)
	}
	c.do(http.MethodGet, c.root+"/healthz", "").expect(t, http.StatusOK)
}
