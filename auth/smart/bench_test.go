package smart_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/anodyne-fhir/anodyne/auth/smart"
	"github.com/anodyne-fhir/anodyne/fhir"
)

// BenchmarkAuthOverhead measures what token verification and the scope
// filter add to a read and to a search: the same store served once with
// authorization off and once with a patient/ token (signature, issuer,
// audience and expiry checks, the revocation lookup, the compartment
// filter). Compare the on/off pairs of one run. The audit write is measured
// by the +audit modes: "sync" is one Commit per request, "group" is
// audit.GroupCommit as the real server runs it; the parallel sub-benchmarks
// (8 clients per core) show what group commit saves under concurrency.
func BenchmarkAuthOverhead(b *testing.B) {
	seeded := func(opts ...envOption) (*env, string) {
		e := newEnv(b, opts...)
		e.seed()
		e.addClient(smart.Client{ID: "matrix", Type: smart.ClientPublic, RedirectURIs: []string{redirect}, Scopes: "launch/patient patient/*.rs"}, "")
		e.addAccount("doc", "Practitioner/p1", "a", "b")
		return e, e.userToken(b, "doc", "launch/patient", "patient/Observation.rs", "patient/Patient.rs")
	}
	e, tok := seeded(func(c *envConfig) { c.noAudit = true })
	off, err := fhir.New(fhir.Config{BaseURL: e.base, Backend: e.be, Registry: registry(b), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	synced, stok := seeded()
	grouped, gtok := seeded(func(c *envConfig) { c.groupAudit = true })

	type mode struct {
		name  string
		h     http.Handler
		token string
	}
	modes := []mode{
		{"off", off.Handler(), ""},
		{"on", e.srv.Config.Handler, tok},
		{"on+audit-sync", synced.srv.Config.Handler, stok},
		{"on+audit-group", grouped.srv.Config.Handler, gtok},
	}
	request := func(path, token string) *http.Request {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Accept", "application/fhir+json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return req
	}
	for _, path := range []struct{ name, path string }{{"read", "/fhir/Observation/a-vital"}, {"search", "/fhir/Observation?status=final"}} {
		for _, m := range modes {
			rec := httptest.NewRecorder()
			m.h.ServeHTTP(rec, request(path.path, m.token))
			if rec.Code != http.StatusOK {
				b.Fatalf("%s %s: %d %s", m.name, path.path, rec.Code, rec.Body)
			}
			b.Run(path.name+"/"+m.name, func(b *testing.B) {
				req := request(path.path, m.token)
				for b.Loop() {
					m.h.ServeHTTP(httptest.NewRecorder(), req)
				}
			})
		}
		for _, m := range modes[2:] {
			b.Run(path.name+"/parallel/"+m.name, func(b *testing.B) {
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					req := request(path.path, m.token)
					for pb.Next() {
						m.h.ServeHTTP(httptest.NewRecorder(), req)
					}
				})
			})
		}
	}
}
