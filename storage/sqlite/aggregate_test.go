package sqlite

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// TestAggregate checks Summarize and Samples against statistics this test
// computes itself from the values it wrote.
func TestAggregate(t *testing.T) {
	ctx := context.Background()
	b, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	type obs struct {
		id, code, unit, patient string
		num                     float64
		date                    int64
		deleted                 bool
	}
	rng := rand.New(rand.NewPCG(7, 11))
	var all []obs
	for i := range 80 {
		o := obs{id: fmt.Sprintf("o%d", i), code: []string{"pain", "hr"}[i%2], unit: "{score}",
			patient: fmt.Sprintf("p%d", rng.IntN(13)), num: math.Round(rng.Float64()*1000) / 100,
			date: int64(1_700_000_000_000 + i*86_400_000), deleted: i%17 == 0}
		if o.code == "hr" && i%3 == 0 {
			o.unit = "/min"
		}
		all = append(all, o)
		w := storage.Write{Record: storage.Record{Type: "Observation", ID: o.id, VersionID: 1, LastUpdated: time.Now(), Method: "PUT", JSON: []byte(`{}`)},
			Index: []storage.Entry{
				{Param: "code", Kind: storage.KindToken, System: "s", Code: o.code},
				{Param: "value-quantity", Kind: storage.KindQuantity, Num: o.num, NumLow: o.num, NumHigh: o.num, System: "http://unitsofmeasure.org", Code: o.unit},
				{Param: "value-quantity:canonical", Kind: storage.KindQuantity, Num: o.num * 1000, System: "http://unitsofmeasure.org", Code: "x"},
				{Param: "patient", Kind: storage.KindReference, RefType: "Patient", RefID: o.patient},
				{Param: "date", Kind: storage.KindDate, Low: o.date, High: o.date + 999},
			}}
		if _, err := b.Commit(ctx, w); err != nil {
			t.Fatal(err)
		}
		if o.deleted {
			if _, err := b.Commit(ctx, storage.Write{Record: storage.Record{Type: "Observation", ID: o.id, VersionID: 2, LastUpdated: time.Now(), Method: "DELETE", Deleted: true}, ExpectVersion: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A resource of another type with the same parameter is never counted.
	if _, err := b.Commit(ctx, storage.Write{Record: storage.Record{Type: "Basic", ID: "b1", VersionID: 1, LastUpdated: time.Now(), Method: "PUT", JSON: []byte(`{}`)},
		Index: []storage.Entry{{Param: "value-quantity", Kind: storage.KindQuantity, Num: 1e6, Code: "{score}", System: "http://unitsofmeasure.org"}}}); err != nil {
		t.Fatal(err)
	}

	code := func(c string) storage.Expr {
		return storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: c}}
	}
	after := all[40].date
	cases := []struct {
		name   string
		filter storage.Expr
		keep   func(obs) bool
	}{
		{"everything", nil, func(obs) bool { return true }},
		{"one code", code("pain"), func(o obs) bool { return o.code == "pain" }},
		{"two units", code("hr"), func(o obs) bool { return o.code == "hr" }},
		{"code and date", storage.And{Exprs: []storage.Expr{code("pain"),
			storage.Match{Param: "date", Kind: storage.KindDate, Cond: storage.Cmp{Field: storage.FieldLow, Op: storage.OpGe, Value: after}}}},
			func(o obs) bool { return o.code == "pain" && o.date >= after }},
		{"nothing", code("none"), func(obs) bool { return false }},
	}
	qs := []float64{0, 0.2, 0.25, 0.5, 0.75, 0.8, 1}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := storage.AggregateQuery{Type: "Observation", Filter: tc.filter, Value: "value-quantity", Subject: "patient", Date: "date", Quantiles: qs}
			got, err := b.Summarize(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			// The expected figures, unit by unit, computed here.
			byUnit := map[string][]obs{}
			for _, o := range all {
				if !o.deleted && tc.keep(o) {
					byUnit[o.unit] = append(byUnit[o.unit], o)
				}
			}
			units := make([]string, 0, len(byUnit))
			for u := range byUnit {
				units = append(units, u)
			}
			sort.Strings(units)
			if len(got) != len(units) {
				t.Fatalf("%d summaries, want %d (%v): %+v", len(got), len(units), units, got)
			}
			for i, u := range units {
				g, os := got[i], byUnit[u]
				var vals []float64
				pats := map[string]bool{}
				sum := 0.0
				for _, o := range os {
					vals = append(vals, o.num)
					pats[o.patient] = true
					sum += o.num
				}
				sort.Float64s(vals)
				mean := sum / float64(len(vals))
				sq := 0.0
				for _, v := range vals {
					sq += (v - mean) * (v - mean)
				}
				if g.Code != u || g.Count != len(vals) || g.Subjects != len(pats) || !near(g.Sum, sum) || g.Min != vals[0] || g.Max != vals[len(vals)-1] ||
					!near(g.Mean, mean) || !near(g.SquaredDeviations, sq) {
					t.Errorf("unit %s: got %+v; want count %d subjects %d sum %v min %v max %v mean %v sq %v", u, g, len(vals), len(pats), sum, vals[0], vals[len(vals)-1], mean, sq)
				}
				for j, q := range qs {
					// Linear between closest ranks, by hand.
					pos := q * float64(len(vals)-1)
					lo := int(pos)
					want := vals[lo]
					if lo+1 < len(vals) {
						want += (pos - float64(lo)) * (vals[lo+1] - vals[lo])
					}
					if !near(g.Quantiles[j], want) {
						t.Errorf("unit %s quantile %v: %v, want %v", u, q, g.Quantiles[j], want)
					}
				}
			}
			samples, err := b.Samples(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]obs{}
			for _, o := range all {
				if !o.deleted && tc.keep(o) {
					want[o.id] = o
				}
			}
			if len(samples) != len(want) {
				t.Fatalf("%d samples, want %d", len(samples), len(want))
			}
			for _, s := range samples {
				o, ok := want[s.ID]
				if !ok || s.Num != o.num || s.Code != o.unit || s.Subject != "Patient/"+o.patient || s.Date != o.date {
					t.Errorf("sample %+v, want %+v", s, o)
				}
			}
		})
	}
	// Without quantiles the other figures are unchanged.
	noQ, err := b.Summarize(ctx, storage.AggregateQuery{Type: "Observation", Value: "value-quantity", Subject: "patient", Filter: code("hr")})
	withQ, err2 := b.Summarize(ctx, storage.AggregateQuery{Type: "Observation", Value: "value-quantity", Subject: "patient", Filter: code("hr"), Quantiles: []float64{0.5}})
	if err != nil || err2 != nil || len(noQ) != 2 || len(withQ) != 2 {
		t.Fatalf("without quantiles: %v %v %+v %+v", err, err2, noQ, withQ)
	}
	for i := range noQ {
		if noQ[i].Quantiles != nil || noQ[i].Count != withQ[i].Count || noQ[i].Subjects != withQ[i].Subjects || noQ[i].Sum != withQ[i].Sum {
			t.Errorf("without quantiles %+v, with %+v", noQ[i], withQ[i])
		}
	}
	if _, err := b.Summarize(ctx, storage.AggregateQuery{Type: "Observation"}); err == nil {
		t.Error("a query without a Value parameter was accepted")
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

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

// TestAggregateComponents: the values of one code recorded either as an
// Observation's value or as a component's (blood-pressure panels), with
// the other component's values and other codes left out; checked against
// the values this test wrote and against storage.SamplesOf.
func TestAggregateComponents(t *testing.T) {
	ctx := context.Background()
	b, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const systolic, diastolic = "8480-6", "8462-4"
	token := func(param, code string) storage.Entry {
		return storage.Entry{Param: param, Kind: storage.KindToken, System: "http://loinc.org", Code: code}
	}
	qty := func(param string, num float64) storage.Entry {
		return storage.Entry{Param: param, Kind: storage.KindQuantity, Num: num, NumLow: num - 0.5, NumHigh: num + 0.5, System: "http://unitsofmeasure.org", Code: "mm[Hg]"}
	}
	comp := func(code string, num float64) storage.Entry {
		return storage.Entry{Param: "component-code-value-quantity", Kind: storage.KindComposite,
			Parts: []storage.Entry{token("component-code", code), qty("component-value-quantity", num)}}
	}
	var want []float64
	written := map[string][]storage.Entry{}
	for i := range 30 {
		id := fmt.Sprintf("bp%d", i)
		sys, dia := float64(100+i), float64(60+i)
		idx := []storage.Entry{{Param: "patient", Kind: storage.KindReference, RefType: "Patient", RefID: fmt.Sprintf("p%d", i%7)},
			{Param: "date", Kind: storage.KindDate, Low: int64(i) * 1000, High: int64(i)*1000 + 999}}
		switch i % 3 {
		case 0: // a panel: both components
			idx = append(idx, token("code", "85354-9"), comp(systolic, sys), comp(diastolic, dia))
			want = append(want, sys)
		case 1: // a systolic reading of its own
			idx = append(idx, token("code", systolic), qty("value-quantity", sys))
			want = append(want, sys)
		case 2: // a diastolic reading: not systolic
			idx = append(idx, token("code", diastolic), qty("value-quantity", dia))
		}
		written[id] = idx
		if _, err := b.Commit(ctx, storage.Write{Record: storage.Record{Type: "Observation", ID: id, VersionID: 1, LastUpdated: time.Now(), Method: "PUT", JSON: []byte(`{}`)}, Index: idx}); err != nil {
			t.Fatal(err)
		}
	}
	codeIs := storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: systolic}
	q := storage.AggregateQuery{Type: "Observation", Value: "value-quantity", Subject: "patient", Date: "date", Quantiles: []float64{0.5},
		Where:     storage.Match{Param: "code", Kind: storage.KindToken, Cond: codeIs},
		Component: &storage.ComponentValues{Param: "component-code-value-quantity", Cond: storage.Part{Index: 0, Cond: codeIs}, Part: 1}}
	got, err := b.Summarize(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	sort.Float64s(want)
	sum := 0.0
	for _, v := range want {
		sum += v
	}
	if len(got) != 1 || got[0].Count != len(want) || got[0].Sum != sum || got[0].Min != want[0] || got[0].Max != want[len(want)-1] ||
		got[0].Subjects != 7 || got[0].Code != "mm[Hg]" || !near(got[0].Quantiles[0], (want[9]+want[10])/2) {
		t.Fatalf("systolic summary %+v, want %d values summing to %v from %v", got, len(want), sum, want)
	}
	samples, err := b.Samples(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	var ref []storage.Sample
	for id, idx := range written {
		s, err := storage.SamplesOf(id, idx, q)
		if err != nil {
			t.Fatal(err)
		}
		ref = append(ref, s...)
	}
	key := func(s []storage.Sample) []string {
		var out []string
		for _, x := range s {
			out = append(out, fmt.Sprintf("%s %v %s %d", x.ID, x.Num, x.Subject, x.Date))
		}
		sort.Strings(out)
		return out
	}
	if g, w := key(samples), key(ref); fmt.Sprint(g) != fmt.Sprint(w) || len(g) != len(want) {
		t.Errorf("samples %v, want (SamplesOf) %v", g, w)
	}
}
