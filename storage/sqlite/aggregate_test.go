package sqlite

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// The Aggregator's conformance cases are in storagetest (Aggregate).

// BenchmarkSummarize: population statistics of one code over 100,000
// Observations (half of them that code, 1,000 patients), in SQL, and the
// samples a research answer reads instead.
//
//	go test ./storage/sqlite -run '^$' -bench Summarize -benchtime 10x
func BenchmarkSummarize(b *testing.B) {
	ctx := context.Background()
	// ANODYNE_BENCH_DIR keeps the loaded store between runs (loading is
	// most of a run): the data are a pure function of the seed.
	dir, keep := os.LookupEnv("ANODYNE_BENCH_DIR")
	if !keep {
		dir = b.TempDir()
	}
	_, statErr := os.Stat(filepath.Join(dir, "loaded"))
	be, err := Open(ctx, dir)
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	rng := rand.New(rand.NewPCG(3, 5))
	var batch []storage.Write
	for i := range 100_000 {
		if statErr == nil {
			break
		}
		code := "72514-3"
		if i%2 == 1 {
			code = fmt.Sprintf("other-%d", i%17)
		}
		num := float64(rng.IntN(11))
		batch = append(batch, storage.Write{Record: storage.Record{Type: "Observation", ID: fmt.Sprintf("o%d", i), VersionID: 1, LastUpdated: time.Now(), Method: "PUT", JSON: []byte(`{}`)},
			Index: []storage.Entry{
				{Param: "code", Kind: storage.KindToken, System: "http://loinc.org", Code: code},
				{Param: "status", Kind: storage.KindToken, System: "http://hl7.org/fhir/observation-status", Code: "final"},
				{Param: "value-quantity", Kind: storage.KindQuantity, Num: num, NumLow: num - 0.5, NumHigh: num + 0.5, System: "http://unitsofmeasure.org", Code: "{score}"},
				{Param: "patient", Kind: storage.KindReference, RefType: "Patient", RefID: fmt.Sprintf("p%d", rng.IntN(1000))},
				{Param: "date", Kind: storage.KindDate, Low: int64(1_700_000_000_000 + i*60_000), High: int64(1_700_000_000_000 + i*60_000 + 999)},
			}})
		if len(batch) == 1000 {
			if _, err := be.Commit(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if statErr != nil {
		if err := os.WriteFile(filepath.Join(dir, "loaded"), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	q := storage.AggregateQuery{Type: "Observation", Value: "value-quantity", Subject: "patient", Date: "date",
		Quantiles: []float64{0.2, 0.25, 0.4, 0.5, 0.6, 0.75, 0.8},
		Filter: storage.And{Exprs: []storage.Expr{
			storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.And{Exprs: []storage.Expr{
				storage.Cmp{Field: storage.FieldSystem, Op: storage.OpEq, Value: "http://loinc.org"},
				storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "72514-3"}}}},
			storage.Not{Expr: storage.Match{Param: "status", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "entered-in-error"}}},
		}}}
	b.Run("summarize", func(b *testing.B) {
		for b.Loop() {
			s, err := be.Summarize(ctx, q)
			if err != nil || len(s) != 1 || s[0].Count != 50_000 {
				b.Fatalf("%v %+v", err, s)
			}
		}
	})
	b.Run("samples", func(b *testing.B) {
		for b.Loop() {
			s, err := be.Samples(ctx, q)
			if err != nil || len(s) != 50_000 {
				b.Fatalf("%v %d", err, len(s))
			}
		}
	})
}
