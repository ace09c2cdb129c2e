package subscription

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// matcher is a Service attached to a real server (for criteria
// compilation) and the registry behind it.
func matcher(t testing.TB) (*Service, *resources.Registry) {
	ctx := context.Background()
	be, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	reg, err := resources.Load()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fhir.New(fhir.Config{BaseURL: "http://127.0.0.1", Backend: be, Registry: reg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	svc, err := New(Config{Backend: be, Authorizer: auth.NewPolicy(reg), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	svc.Attach(srv)
	return svc, reg
}

func benchObservation(id, code, patient string, value int) map[string]any {
	return map[string]any{
		"resourceType": "Observation", "id": id, "status": "final",
		"code":          map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": code}}},
		"subject":       map[string]any{"reference": "Patient/" + patient},
		"valueQuantity": map[string]any{"value": value, "system": "http://unitsofmeasure.org", "code": "{score}"},
	}
}

// BenchmarkMatch is the in-memory matching of one written Observation
// against n active Subscriptions (criteria and the owner's patient
// compartment filter), none of which matches: scan checks each one
// (the cost before the candidate index), index only the candidates the
// written entries name.
//
//	go test ./subscription -run '^$' -bench Match
func BenchmarkMatch(b *testing.B) {
	ctx := context.Background()
	svc, reg := matcher(b)
	obs := benchObservation("o1", "72514-3", "p1", 8)
	entries, err := reg.Index("Observation", obs)
	if err != nil {
		b.Fatal(err)
	}
	w := storage.Write{Record: storage.Record{Type: "Observation", ID: "o1", VersionID: 1}, Index: entries}
	own := &owner{Client: "app", Scope: "patient/Observation.rs", Patient: "p1"}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, n := range []int{0, 100, 1000} {
		var list []*active
		for i := range n {
			a, err := svc.compile(ctx, &sub{ID: fmt.Sprint(i), Status: statusActive, Criteria: fmt.Sprintf("Observation?code=http://loinc.org|bench-%d&value-quantity=ge7", i), Owner: own})
			if err != nil {
				b.Fatal(err)
			}
			list = append(list, a)
		}
		ix := newTypeIndex(list)
		res := func() map[string]any { return obs }
		b.Run(fmt.Sprintf("scan/subscriptions=%d", n), func(b *testing.B) {
			for b.Loop() {
				for _, a := range list {
					if a.matches(log, w, res) {
						b.Fatal("matched")
					}
				}
			}
		})
		b.Run(fmt.Sprintf("index/subscriptions=%d", n), func(b *testing.B) {
			for b.Loop() {
				for _, a := range ix.candidates(w.Index) {
					if a.matches(log, w, res) {
						b.Fatal("matched")
					}
				}
			}
		})
	}
}

// TestIndexKeepsEveryMatch: over criteria of many shapes (codes, code
// lists, system-only tokens, references, ranges alone, :not, _id, an
// owner's compartment) and random Observations, the Subscriptions the
// candidate index offers and that match are exactly those a scan of all
// finds; and the index leaves out most of a selective population.
func TestIndexKeepsEveryMatch(t *testing.T) {
	ctx := context.Background()
	svc, reg := matcher(t)
	codes := []string{"72514-3", "8867-4", "59408-5", "8310-5", "9279-1"}
	patients := []string{"p1", "p2", "p3"}
	var crits []string
	for i, c := range codes {
		crits = append(crits,
			"Observation?code=http://loinc.org|"+c,
			"Observation?code="+c+"&value-quantity=ge"+fmt.Sprint(i+3),
			"Observation?code="+c+","+codes[(i+1)%len(codes)]+"&subject=Patient/"+patients[i%len(patients)],
			"Observation?subject=Patient/"+patients[i%len(patients)]+"&code:not="+c,
		)
	}
	crits = append(crits, "Observation", "Observation?value-quantity=lt3", "Observation?code=http://loinc.org|",
		"Observation?_id=o1,o2", "Observation?code=http://snomed.info/sct|72514-3", "Observation?status=final")
	owners := []*owner{nil, {Client: "app", Scope: "patient/Observation.rs", Patient: "p2"}}
	var list []*active
	for i, c := range crits {
		for j, o := range owners {
			a, err := svc.compile(ctx, &sub{ID: fmt.Sprintf("s%d-%d", i, j), Status: statusActive, Criteria: c, Owner: o})
			if err != nil {
				t.Fatalf("%s: %v", c, err)
			}
			list = append(list, a)
		}
	}
	ix := newTypeIndex(list)
	if len(ix.scan) >= len(list)/2 {
		t.Fatalf("%d of %d Subscriptions scanned on every write: the index files almost none", len(ix.scan), len(list))
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rng := rand.New(rand.NewPCG(1, 2))
	matched, offered := 0, 0
	for n := range 300 {
		id := fmt.Sprintf("o%d", 1+rng.IntN(5))
		obs := benchObservation(id, codes[rng.IntN(len(codes))], patients[rng.IntN(len(patients))], rng.IntN(11))
		entries, err := reg.Index("Observation", obs)
		if err != nil {
			t.Fatal(err)
		}
		w := storage.Write{Record: storage.Record{Type: "Observation", ID: id, VersionID: 1}, Index: entries}
		res := func() map[string]any { return obs }
		var want, got []string
		for _, a := range list {
			if a.matches(log, w, res) {
				want = append(want, a.sub.ID)
			}
		}
		cands := ix.candidates(w.Index)
		seen := map[*active]bool{}
		for _, a := range cands {
			if seen[a] {
				t.Fatalf("write %d: Subscription/%s offered twice", n, a.sub.ID)
			}
			seen[a] = true
			if a.matches(log, w, res) {
				got = append(got, a.sub.ID)
			}
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("write %d (%v): index matches %v, scan %v", n, obs, got, want)
		}
		matched += len(want)
		offered += len(cands)
	}
	if matched == 0 {
		t.Fatal("no write matched anything: the comparison proves nothing")
	}
	if offered >= 300*len(list)/2 {
		t.Errorf("%d candidates over 300 writes of %d Subscriptions: the index offers nearly all", offered, len(list))
	}
}
