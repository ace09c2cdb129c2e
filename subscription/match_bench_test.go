package subscription

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// BenchmarkMatch is the in-memory matching of one written Observation
// against n active Subscriptions (criteria and the owner's patient
// compartment filter), the part of a write's cost that grows with n.
//
//	go test ./subscription -run '^$' -bench Match
func BenchmarkMatch(b *testing.B) {
	ctx := context.Background()
	be, err := sqlite.Open(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	reg, err := resources.Load()
	if err != nil {
		b.Fatal(err)
	}
	srv, err := fhir.New(fhir.Config{BaseURL: "http://127.0.0.1", Backend: be, Registry: reg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	svc, err := New(Config{Backend: be, Authorizer: auth.NewPolicy(reg)})
	if err != nil {
		b.Fatal(err)
	}
	svc.Attach(srv)
	obs := map[string]any{
		"resourceType": "Observation", "id": "o1", "status": "final",
		"code":          map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "72514-3"}}},
		"subject":       map[string]any{"reference": "Patient/p1"},
		"valueQuantity": map[string]any{"value": 8, "system": "http://unitsofmeasure.org", "code": "{score}"},
	}
	entries, err := reg.Index("Observation", obs)
	if err != nil {
		b.Fatal(err)
	}
	w := storage.Write{Record: storage.Record{Type: "Observation", ID: "o1", VersionID: 1}, Index: entries}
	own := &owner{Client: "app", Scope: "patient/Observation.rs", Patient: "p1"}
	for _, n := range []int{0, 100, 1000} {
		var list []*active
		for i := range n {
			a, err := svc.compile(ctx, &sub{ID: fmt.Sprint(i), Status: statusActive, Criteria: fmt.Sprintf("Observation?code=http://loinc.org|bench-%d&value-quantity=ge7", i), Owner: own})
			if err != nil {
				b.Fatal(err)
			}
			list = append(list, a)
		}
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		b.Run(fmt.Sprintf("subscriptions=%d", n), func(b *testing.B) {
			for b.Loop() {
				for _, a := range list {
					if a.matches(log, w) {
						b.Fatal("matched")
					}
				}
			}
		})
	}
}
