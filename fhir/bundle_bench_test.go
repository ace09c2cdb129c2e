package fhir_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkBundle100 posts Bundles of 100 entries over HTTP to a server on
// SQLite: a transaction (one Patient by urn:uuid and 99 Observations that
// refer to it) and a batch (50 updates of Observations with client ids
// and 50 reads of them). It reports entries per second; one op is one
// Bundle.
func BenchmarkBundle100(b *testing.B) {
	be, err := sqliteOpen(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	c := newServer(b, be, nil)

	tx := func() string {
		entries := []string{postEntry("urn:uuid:3f2c1a90-0000-4000-8000-000000000001",
			`{"resourceType":"Patient","name":[{"family":"Bench"}]}`)}
		for i := range 99 {
			entries = append(entries, postEntry(fmt.Sprintf("urn:uuid:3f2c1a90-0000-4000-8000-%012d", i+2),
				txObs("urn:uuid:3f2c1a90-0000-4000-8000-000000000001", fmt.Sprintf("bench-%d", i))))
		}
		return bundleJSON("transaction", entries...)
	}()
	batch := func() string {
		var entries []string
		for i := range 50 {
			id := fmt.Sprintf("bench-batch-%d", i)
			res := strings.Replace(txObs("Patient/bench", "batch"), `{"resourceType":"Observation",`, `{"resourceType":"Observation","id":"`+id+`",`, 1)
			entries = append(entries, fmt.Sprintf(`{"resource":%s,"request":{"method":"PUT","url":"Observation/%s"}}`, res, id))
		}
		for i := range 50 {
			entries = append(entries, fmt.Sprintf(`{"request":{"method":"GET","url":"Observation/bench-batch-%d"}}`, i))
		}
		return bundleJSON("batch", entries...)
	}()

	for _, bc := range []struct{ name, body string }{{"transaction", tx}, {"batch", batch}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				status, body, err := postBundle(c, bc.body)
				if err != nil || status != http.StatusOK {
					b.Fatalf("%s: %d %v %.300s", bc.name, status, err, body)
				}
				if strings.Contains(string(body), `"status":"4`) || strings.Contains(string(body), `"status":"5`) {
					b.Fatalf("%s: an entry failed: %.500s", bc.name, body)
				}
			}
			b.ReportMetric(float64(100*b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
