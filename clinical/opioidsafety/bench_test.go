package opioidsafety_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/clinical/opioidsafety"
	"github.com/anodyne-fhir/anodyne/fhir"
)

// BenchmarkMedicationRequestWrite: one PUT of an opioid MedicationRequest
// over HTTP on SQLite, with and without the opioid observer, for a
// patient who already has 5 active requests (so the observer reads 6
// and rewrites the patient's MME DetectedIssue on every change).
func BenchmarkMedicationRequestWrite(b *testing.B) {
	for _, withObs := range []bool{false, true} {
		b.Run(fmt.Sprintf("observer=%v", withObs), func(b *testing.B) {
			v, reg, tab := parts(b)
			be := backends()[0].open(b)
			ts := httptest.NewUnstartedServer(nil)
			cfg := fhir.Config{BaseURL: "http://" + ts.Listener.Addr().String(), Backend: be, Validator: v, Registry: reg,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
			if withObs {
				cfg.Observers = []fhir.CommitObserver{opioidsafety.NewObserver(tab, nil)}
			}
			srv, err := fhir.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			ts.Config.Handler = srv.Handler()
			ts.Start()
			defer ts.Close()
			defer srv.Close()
			s := &server{srv: srv, root: ts.URL, hc: ts.Client()}
			s.do(b, "PUT", "/fhir/Patient/p", patient("p")).expect(b, 201)
			for i := 0; i < 5; i++ {
				id := fmt.Sprintf("base%d", i)
				s.do(b, "PUT", "/fhir/MedicationRequest/"+id, mr(id, "p", "active", "892582", "morphine 15 MG", 1, 24)).expect(b, 201)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// The same request, its dose changing: the patient keeps 6
				// active requests and each change updates the MME issue.
				r := s.do(b, "PUT", "/fhir/MedicationRequest/m", mr("m", "p", "active", "1049621", "oxycodone 5 MG", float64(1+i%2), 4))
				if r.status >= 300 || !strings.Contains(string(r.body), "MedicationRequest") {
					b.Fatalf("status %d", r.status)
				}
			}
		})
	}
}
