package opioidsafety_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/clinical/opioidsafety"
	"github.com/anodyne-fhir/anodyne/fhir"
)

// BenchmarkMedicationRequestWrite: one PUT of an opioid MedicationRequest
// over HTTP on SQLite, with and without the opioid observer, for a
// patient who already has 5 active requests (so the observer reads 6
// and rewrites the patient's MME DetectedIssue on every change); the
// observer's per-patient serialization across processes (a KV lease,
// the default) and in this process only (fhir.Config.SerializeInProcess).
func BenchmarkMedicationRequestWrite(b *testing.B) {
	for _, v := range []struct {
		name          string
		withObs, proc bool
	}{{"observer=false", false, false}, {"observer=true", true, false}, {"observer=true,serialize=in-process", true, true}} {
		b.Run(v.name, func(b *testing.B) {
			_, _, tab := parts(b)
			withObs := v.withObs
			s := &server{env.Start(b, backends()[0].Open(b), func(cfg *fhir.Config) {
				if withObs {
					cfg.Observers = []fhir.CommitObserver{opioidsafety.NewObserver(tab, nil)}
				}
				cfg.SerializeInProcess = v.proc
			})}
			s.do(b, "PUT", "/fhir/Patient/p", patient("p")).Expect(b, 201)
			for i := 0; i < 5; i++ {
				id := fmt.Sprintf("base%d", i)
				s.do(b, "PUT", "/fhir/MedicationRequest/"+id, mr(id, "p", "active", "892582", "morphine 15 MG", 1, 24)).Expect(b, 201)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// The same request, its dose changing: the patient keeps 6
				// active requests and each change updates the MME issue.
				r := s.do(b, "PUT", "/fhir/MedicationRequest/m", mr("m", "p", "active", "1049621", "oxycodone 5 MG", float64(1+i%2), 4))
				if r.Status >= 300 || !strings.Contains(string(r.Body), "MedicationRequest") {
					b.Fatalf("status %d", r.Status)
				}
			}
		})
	}
}
