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
// filter). Compare the on/off pairs of one run. Auditing is left out: it
// is a write per request and is measured on its own by the audit sub-benchmarks.
func BenchmarkAuthOverhead(b *testing.B) {
	e := newEnv(b, func(c *envConfig) { c.noAudit = true })
	e.seed()
	e.addClient(smart.Client{ID: "matrix", Type: smart.ClientPublic, RedirectURIs: []string{redirect}, Scopes: "launch/patient patient/*.rs"}, "")
	e.addAccount("doc", "Practitioner/p1", "a", "b")
	tok := e.userToken(b, "doc", "launch/patient", "patient/Observation.rs", "patient/Patient.rs")

	off, err := fhir.New(fhir.Config{BaseURL: e.base, Backend: e.be, Registry: registry(b), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	audited := newEnv(b)
	audited.seed()
	audited.addClient(smart.Client{ID: "matrix", Type: smart.ClientPublic, RedirectURIs: []string{redirect}, Scopes: "launch/patient patient/*.rs"}, "")
	audited.addAccount("doc", "Practitioner/p1", "a", "b")
	atok := audited.userToken(b, "doc", "launch/patient", "patient/Observation.rs", "patient/Patient.rs")

	for _, path := range []struct{ name, path string }{{"read", "/fhir/Observation/a-vital"}, {"search", "/fhir/Observation?status=final"}} {
		for _, mode := range []struct {
			name  string
			h     http.Handler
			token string
		}{{"off", off.Handler(), ""}, {"on", e.srv.Config.Handler, tok}, {"on+audit", audited.srv.Config.Handler, atok}} {
			b.Run(path.name+"/"+mode.name, func(b *testing.B) {
				req := httptest.NewRequest(http.MethodGet, path.path, nil)
				req.Header.Set("Accept", "application/fhir+json")
				if mode.token != "" {
					req.Header.Set("Authorization", "Bearer "+mode.token)
				}
				rec := httptest.NewRecorder()
				mode.h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("%s %s: %d %s", mode.name, path.path, rec.Code, rec.Body)
				}
				b.ResetTimer()
				for b.Loop() {
					rec := httptest.NewRecorder()
					mode.h.ServeHTTP(rec, req)
				}
			})
		}
	}
}
