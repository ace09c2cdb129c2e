package storagetest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Aggregator cases (storage.Aggregator, where the backend implements it):
// Summarize and Samples over a fixture of Observation-like resources,
// checked against figures this file computes by hand from the values it
// wrote (never through storage.SummarizeSamples).

var aggregateCases = []testCase{
	{"ValuesByFilter", aggregateValues},
	{"Components", aggregateComponents},
	{"Refused", aggregateRefused},
	{"OneSubjectPerResource", aggregateOneSubject},
	{"TiedValues", aggregateTied},
	{"NoSubject", aggregateNoSubject},
}

func (e *env) aggregator(t *testing.T) storage.Aggregator {
	t.Helper()
	a, ok := storage.As[storage.Aggregator](e.b)
	if !ok {
		t.Skip("backend does not implement storage.Aggregator")
	}
	return a
}

// aggObs is one resource of the aggregate fixture as the test knows it.
type aggObs struct {
	id, code, unit, status, patient string
	num                             float64
	date                            int64 // 0: no date entry
	deleted                         bool
}

func aggCode(code string) storage.Expr {
	// System and code: two equalities, which a backend without entry-level
	// conjunctions can only narrow to a superset and must re-check.
	return storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.And{Exprs: []storage.Expr{
		storage.Cmp{Field: storage.FieldSystem, Op: storage.OpEq, Value: "s"},
		storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: code}}}}
}

func aggPatient(id string) storage.Expr {
	return storage.Match{Param: "patient", Kind: storage.KindReference, Cond: storage.And{Exprs: []storage.Expr{
		storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: "Patient"},
		storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: id}}}}
}

func aggregateFixture(t *testing.T, e *env) []aggObs {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 11))
	var all []aggObs
	var ws []storage.Write
	for i := range 60 {
		o := aggObs{id: fmt.Sprintf("o%d", i), code: []string{"pain", "hr"}[i%2], unit: "{score}", status: "final",
			patient: fmt.Sprintf("p%d", rng.IntN(13)), num: math.Round(rng.Float64()*1000) / 100,
			date: ms("2024-01-01T00:00:00Z") + int64(i)*86_400_000, deleted: i%17 == 0}
		if o.code == "hr" && i%3 == 0 {
			o.unit = "/min"
		}
		if i%11 == 4 {
			o.status = "entered-in-error"
		}
		if i%13 == 6 {
			o.patient = "" // no subject: counted as a value, not as a subject
		}
		if i%19 == 7 {
			o.date = 0
		}
		all = append(all, o)
		idx := []storage.Entry{
			tok("code", "s", o.code, ""),
			tok("status", "http://hl7.org/fhir/observation-status", o.status, ""),
			{Param: "value-quantity", Kind: storage.KindQuantity, Num: o.num, NumLow: o.num - 0.005, NumHigh: o.num + 0.005, System: ucum, Code: o.unit},
			// Another parameter of the same kind is never a value.
			{Param: "value-quantity:canonical", Kind: storage.KindQuantity, Num: o.num * 1000, System: ucum, Code: "x"},
		}
		if o.patient != "" {
			idx = append(idx, ref("patient", "Patient", o.patient))
		}
		if o.date != 0 {
			idx = append(idx, storage.Entry{Param: "date", Kind: storage.KindDate, Low: o.date, High: o.date + 999})
		}
		ws = append(ws, e.write("Observation", o.id, 0, idx...))
	}
	// A resource of another type with the same parameter is never counted.
	ws = append(ws, e.write("Basic", "b1", 0, storage.Entry{Param: "value-quantity", Kind: storage.KindQuantity, Num: 1e6, System: ucum, Code: "{score}"},
		tok("code", "s", "pain", "")))
	for _, w := range ws {
		e.commit(w)
	}
	for _, o := range all {
		if o.deleted {
			e.del("Observation", o.id)
		}
	}
	// An update replaces the values of its earlier version.
	all[1].num = 42.5
	e.put("Observation", "o1", tok("code", "s", all[1].code, ""), tok("status", "", "final", ""),
		storage.Entry{Param: "value-quantity", Kind: storage.KindQuantity, Num: 42.5, NumLow: 42.495, NumHigh: 42.505, System: ucum, Code: all[1].unit},
		ref("patient", "Patient", all[1].patient), storage.Entry{Param: "date", Kind: storage.KindDate, Low: all[1].date, High: all[1].date + 999})
	return all
}

// aggWant is the statistics of one unit, computed by hand.
type aggWant struct {
	unit      string
	n         int
	subjects  int
	sum       float64
	min, max  float64
	mean, sq  float64
	quantiles []float64
}

func aggExpected(values map[string][]float64, subjects map[string]map[string]bool, qs []float64) []aggWant {
	units := make([]string, 0, len(values))
	for u := range values {
		units = append(units, u)
	}
	slices.Sort(units)
	var out []aggWant
	for _, u := range units {
		vals := slices.Clone(values[u])
		slices.Sort(vals)
		w := aggWant{unit: u, n: len(vals), subjects: len(subjects[u]), min: vals[0], max: vals[len(vals)-1]}
		for _, v := range vals {
			w.sum += v
		}
		w.mean = w.sum / float64(len(vals))
		for _, v := range vals {
			w.sq += (v - w.mean) * (v - w.mean)
		}
		for _, q := range qs {
			// Linear between the closest ranks, by hand.
			pos := q * float64(len(vals)-1)
			lo := int(pos)
			v := vals[lo]
			if lo+1 < len(vals) {
				v += (pos - float64(lo)) * (vals[lo+1] - vals[lo])
			}
			w.quantiles = append(w.quantiles, v)
		}
		out = append(out, w)
	}
	return out
}

func aggNear(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func checkSummaries(t *testing.T, got []storage.Summary, want []aggWant) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d summaries, want %d: got %+v, want %+v", len(got), len(want), got, want)
	}
	for i, w := range want {
		g := got[i]
		if g.System+"|"+g.Code != w.unit || g.Count != w.n || g.Subjects != w.subjects || !aggNear(g.Sum, w.sum) ||
			g.Min != w.min || g.Max != w.max || !aggNear(g.Mean, w.mean) || !aggNear(g.SquaredDeviations, w.sq) {
			t.Errorf("summary %d: got %+v, want %+v", i, g, w)
		}
		if len(g.Quantiles) != len(w.quantiles) {
			t.Errorf("unit %s: %d quantiles, want %d", w.unit, len(g.Quantiles), len(w.quantiles))
			continue
		}
		for j := range w.quantiles {
			if !aggNear(g.Quantiles[j], w.quantiles[j]) {
				t.Errorf("unit %s quantile %d: %v, want %v", w.unit, j, g.Quantiles[j], w.quantiles[j])
			}
		}
	}
}

func sampleKeys(ss []storage.Sample) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%s %s|%s %v %q %d", s.ID, s.System, s.Code, s.Num, s.Subject, s.Date)
	}
	slices.Sort(out)
	return out
}

func aggregateValues(t *testing.T, e *env) {
	agg := e.aggregator(t)
	all := aggregateFixture(t, e)
	after := all[30].date
	notError := storage.Not{Expr: storage.Match{Param: "status", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "entered-in-error"}}}
	cases := []struct {
		name   string
		filter storage.Expr
		where  storage.Expr
		keep   func(aggObs) bool // the resource passes the filter
		values func(aggObs) bool // its value is taken (nil: every kept one)
	}{
		{"everything", nil, nil, func(aggObs) bool { return true }, nil},
		{"one code", aggCode("pain"), nil, func(o aggObs) bool { return o.code == "pain" }, nil},
		{"two units", aggCode("hr"), nil, func(o aggObs) bool { return o.code == "hr" }, nil},
		{"code and date", storage.And{Exprs: []storage.Expr{aggCode("pain"),
			storage.Match{Param: "date", Kind: storage.KindDate, Cond: storage.Cmp{Field: storage.FieldLow, Op: storage.OpGe, Value: after}}}},
			nil, func(o aggObs) bool { return o.code == "pain" && o.date != 0 && o.date >= after }, nil},
		{"not entered in error", storage.And{Exprs: []storage.Expr{aggCode("pain"), notError}}, nil,
			func(o aggObs) bool { return o.code == "pain" && o.status != "entered-in-error" }, nil},
		{"one patient", aggPatient("p3"), nil, func(o aggObs) bool { return o.patient == "p3" }, nil},
		{"either patient", storage.Or{Exprs: []storage.Expr{aggPatient("p3"), aggPatient("p5")}}, nil,
			func(o aggObs) bool { return o.patient == "p3" || o.patient == "p5" }, nil},
		{"where", notError, aggCode("hr"), func(o aggObs) bool { return o.status != "entered-in-error" },
			func(o aggObs) bool { return o.code == "hr" }},
		{"nothing", aggCode("none"), nil, func(aggObs) bool { return false }, nil},
	}
	qs := []float64{0, 0.2, 0.25, 0.5, 0.75, 0.8, 1}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := storage.AggregateQuery{Type: "Observation", Filter: tc.filter, Where: tc.where, Value: "value-quantity",
				Subject: "patient", Date: "date", Quantiles: qs}
			values := map[string][]float64{}
			subjects := map[string]map[string]bool{}
			var wantSamples []storage.Sample
			for _, o := range all {
				if o.deleted || !tc.keep(o) || (tc.values != nil && !tc.values(o)) {
					continue
				}
				u := ucum + "|" + o.unit
				values[u] = append(values[u], o.num)
				if subjects[u] == nil {
					subjects[u] = map[string]bool{}
				}
				s := storage.Sample{ID: o.id, System: ucum, Code: o.unit, Num: o.num, Date: o.date}
				if o.patient != "" {
					subjects[u][o.patient] = true
					s.Subject = "Patient/" + o.patient
				}
				if o.date == 0 {
					s.Date = storage.MinDate
				}
				wantSamples = append(wantSamples, s)
			}
			got, err := agg.Summarize(e.ctx, q)
			if err != nil {
				t.Fatalf("Summarize: %v", err)
			}
			checkSummaries(t, got, aggExpected(values, subjects, qs))
			samples, err := agg.Samples(e.ctx, q)
			if err != nil {
				t.Fatalf("Samples: %v", err)
			}
			wantList(t, sampleKeys(samples), sampleKeys(wantSamples), "samples")
		})
	}
	t.Run("no quantiles", func(t *testing.T) {
		q := storage.AggregateQuery{Type: "Observation", Value: "value-quantity", Subject: "patient", Filter: aggCode("hr")}
		noQ, err := agg.Summarize(e.ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		q.Quantiles = []float64{0.5}
		withQ, err := agg.Summarize(e.ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(noQ) != 2 || len(withQ) != 2 {
			t.Fatalf("without quantiles %+v, with %+v", noQ, withQ)
		}
		for i := range noQ {
			if noQ[i].Quantiles != nil || noQ[i].Count != withQ[i].Count || noQ[i].Subjects != withQ[i].Subjects || noQ[i].Sum != withQ[i].Sum {
				t.Errorf("without quantiles %+v, with %+v", noQ[i], withQ[i])
			}
		}
	})
}

// aggregateComponents: the values of one code recorded either as a
// resource's value or as a component's (blood-pressure panels), with the
// other component's values and other codes left out.
func aggregateComponents(t *testing.T, e *env) {
	agg := e.aggregator(t)
	const systolic, diastolic = "8480-6", "8462-4"
	qty := func(param string, num float64) storage.Entry {
		return storage.Entry{Param: param, Kind: storage.KindQuantity, Num: num, NumLow: num - 0.5, NumHigh: num + 0.5, System: ucum, Code: "mm[Hg]"}
	}
	comp := func(code string, num float64) storage.Entry {
		return storage.Entry{Param: "component-code-value-quantity", Kind: storage.KindComposite,
			Parts: []storage.Entry{tok("component-code", loinc, code, ""), qty("component-value-quantity", num)}}
	}
	var want []float64
	var wantSamples []storage.Sample
	for i := range 24 {
		id := fmt.Sprintf("bp%d", i)
		sys, dia := float64(100+i), float64(60+i)
		patient := fmt.Sprintf("p%d", i%7)
		at := int64(i) * 1000
		idx := []storage.Entry{ref("patient", "Patient", patient), {Param: "date", Kind: storage.KindDate, Low: at, High: at + 999}}
		switch i % 3 {
		case 0: // a panel: both components
			idx = append(idx, tok("code", loinc, "85354-9", ""), comp(systolic, sys), comp(diastolic, dia))
		case 1: // a systolic reading of its own
			idx = append(idx, tok("code", loinc, systolic, ""), qty("value-quantity", sys))
		case 2: // a diastolic reading: not systolic
			idx = append(idx, tok("code", loinc, diastolic, ""), qty("value-quantity", dia))
		}
		if i%3 != 2 {
			want = append(want, sys)
			wantSamples = append(wantSamples, storage.Sample{ID: id, System: ucum, Code: "mm[Hg]", Num: sys, Subject: "Patient/" + patient, Date: at})
		}
		e.put("Observation", id, idx...)
	}
	codeIs := storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: systolic}
	q := storage.AggregateQuery{Type: "Observation", Value: "value-quantity", Subject: "patient", Date: "date", Quantiles: []float64{0.5, 0.9},
		Where:     storage.Match{Param: "code", Kind: storage.KindToken, Cond: codeIs},
		Component: &storage.ComponentValues{Param: "component-code-value-quantity", Cond: storage.Part{Index: 0, Cond: codeIs}, Part: 1}}
	got, err := agg.Summarize(e.ctx, q)
	if err != nil {
		t.Fatalf("Summarize: %v", err)
	}
	subjects := map[string]bool{}
	for _, s := range wantSamples {
		subjects[strings.TrimPrefix(s.Subject, "Patient/")] = true
	}
	checkSummaries(t, got, aggExpected(map[string][]float64{ucum + "|mm[Hg]": want}, map[string]map[string]bool{ucum + "|mm[Hg]": subjects}, q.Quantiles))
	samples, err := agg.Samples(e.ctx, q)
	if err != nil {
		t.Fatalf("Samples: %v", err)
	}
	wantList(t, sampleKeys(samples), sampleKeys(wantSamples), "samples")

	// A filter on the panels alone keeps only the components' values.
	q.Filter = storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "85354-9"}}
	var panels []float64
	for i := 0; i < 24; i += 3 {
		panels = append(panels, float64(100+i))
	}
	got, err = agg.Summarize(e.ctx, q)
	if err != nil {
		t.Fatalf("Summarize of panels: %v", err)
	}
	if len(got) != 1 || got[0].Count != len(panels) || got[0].Min != panels[0] || got[0].Max != panels[len(panels)-1] {
		t.Errorf("panels: %+v, want the %d systolic components %v", got, len(panels), panels)
	}
}

func aggregateRefused(t *testing.T, e *env) {
	agg := e.aggregator(t)
	if _, err := agg.Summarize(e.ctx, storage.AggregateQuery{Type: "Observation"}); err == nil {
		t.Error("Summarize without a Value parameter was accepted")
	}
	if _, err := agg.Samples(e.ctx, storage.AggregateQuery{Value: "value-quantity"}); err == nil {
		t.Error("Samples without a Type was accepted")
	}
	got, err := agg.Summarize(e.ctx, storage.AggregateQuery{Type: "Observation", Value: "value-quantity"})
	if err != nil || len(got) != 0 {
		t.Errorf("Summarize of an empty store: %+v, %v; want no summary", got, err)
	}
}

// aggregateOneSubject: a resource belongs to one subject, its lowest
// Subject target, in Summarize's distinct-subject count as in Samples
// (storage.SamplesOf). Counting every target of a resource that carries
// several would let a cell of few patients pass small-cell suppression as
// one of many, so both backends must count the lowest one only.
func aggregateOneSubject(t *testing.T, e *env) {
	agg := e.aggregator(t)
	val := func(n float64) storage.Entry {
		return storage.Entry{Param: "value-quantity", Kind: storage.KindQuantity, Num: n, NumLow: n, NumHigh: n, System: ucum, Code: "{score}"}
	}
	// o1 and o2 each carry a second, higher target (Patient/zz); o3 one
	// target; o4 none. Lowest targets: Patient/a, Patient/b, Patient/c.
	e.commit(e.write("Observation", "o1", 0, val(1), ref("patient", "Patient", "a"), ref("patient", "Patient", "zz")))
	e.commit(e.write("Observation", "o2", 0, val(2), ref("patient", "Patient", "zz"), ref("patient", "Patient", "b")))
	e.commit(e.write("Observation", "o3", 0, val(3), ref("patient", "Patient", "c")))
	e.commit(e.write("Observation", "o4", 0, val(4)))
	q := storage.AggregateQuery{Type: "Observation", Value: "value-quantity", Subject: "patient", Quantiles: []float64{0.5}}
	got, err := agg.Summarize(e.ctx, q)
	if err != nil {
		t.Fatalf("Summarize: %v", err)
	}
	if len(got) != 1 || got[0].Count != 4 || got[0].Subjects != 3 {
		t.Fatalf("Summarize: %+v; want one unit, 4 values, 3 subjects (one per resource, its lowest target)", got)
	}
	samples, err := agg.Samples(e.ctx, q)
	if err != nil {
		t.Fatalf("Samples: %v", err)
	}
	subjects := map[string]string{}
	for _, s := range samples {
		subjects[s.ID] = s.Subject
	}
	want := map[string]string{"o1": "Patient/a", "o2": "Patient/b", "o3": "Patient/c", "o4": ""}
	if fmt.Sprint(subjects) != fmt.Sprint(want) {
		t.Errorf("Samples' subjects %v; want %v", subjects, want)
	}
}

// aggregateTied: repeated values (a pain score is one of eleven) count
// once per value in every statistic. Values 2, 2, 3, 5: mean 3, squared
// deviations 1+1+0+4 = 6; R-7 quantiles by hand, h = 3q on the sorted
// values 2, 2, 3, 5: q 0 → 2; 0.2 (h 0.6) → 2; 0.25 (h 0.75) → 2;
// 0.4 (h 1.2) → 2 + 0.2·1 = 2.2; 0.5 (h 1.5) → 2.5; 0.75 (h 2.25) →
// 3 + 0.25·2 = 3.5; 0.8 (h 2.4) → 3.8; 1 → 5. A second unit with one
// value repeated three times has every quantile 7 and no spread.
func aggregateTied(t *testing.T, e *env) {
	agg := e.aggregator(t)
	val := func(n float64, unit string) storage.Entry {
		return storage.Entry{Param: "value-quantity", Kind: storage.KindQuantity, Num: n, NumLow: n, NumHigh: n, System: ucum, Code: unit}
	}
	for i, n := range []float64{5, 2, 3, 2} {
		e.commit(e.write("Observation", fmt.Sprintf("t%d", i), 0, val(n, "{score}"), ref("patient", "Patient", fmt.Sprintf("p%d", i%3))))
	}
	for i := range 3 {
		e.commit(e.write("Observation", fmt.Sprintf("u%d", i), 0, val(7, "/min"), ref("patient", "Patient", "p9")))
	}
	qs := []float64{0, 0.2, 0.25, 0.4, 0.5, 0.75, 0.8, 1}
	got, err := agg.Summarize(e.ctx, storage.AggregateQuery{Type: "Observation", Value: "value-quantity", Subject: "patient", Quantiles: qs})
	if err != nil {
		t.Fatalf("Summarize: %v", err)
	}
	checkSummaries(t, got, []aggWant{
		{unit: ucum + "|/min", n: 3, subjects: 1, sum: 21, min: 7, max: 7, mean: 7, sq: 0, quantiles: []float64{7, 7, 7, 7, 7, 7, 7, 7}},
		{unit: ucum + "|{score}", n: 4, subjects: 3, sum: 12, min: 2, max: 5, mean: 3, sq: 6, quantiles: []float64{2, 2, 2, 2.2, 2.5, 3.5, 3.8, 5}},
	})
}

// aggregateNoSubject: without Subject (a caller that needs no distinct
// patients) nothing is counted as a subject and samples carry none, while
// every other figure is the same; without Date samples carry MinDate.
func aggregateNoSubject(t *testing.T, e *env) {
	agg := e.aggregator(t)
	val := func(n float64) storage.Entry {
		return storage.Entry{Param: "value-quantity", Kind: storage.KindQuantity, Num: n, NumLow: n, NumHigh: n, System: ucum, Code: "{score}"}
	}
	at := ms("2024-01-01T00:00:00Z")
	for i, n := range []float64{4, 1, 4} {
		e.commit(e.write("Observation", fmt.Sprintf("n%d", i), 0, val(n), ref("patient", "Patient", fmt.Sprintf("p%d", i)),
			storage.Entry{Param: "date", Kind: storage.KindDate, Low: at, High: at + 999}))
	}
	q := storage.AggregateQuery{Type: "Observation", Value: "value-quantity", Quantiles: []float64{0.5}}
	got, err := agg.Summarize(e.ctx, q)
	if err != nil {
		t.Fatalf("Summarize: %v", err)
	}
	// 1, 4, 4: mean 3, squared deviations 4+1+1 = 6, median 4.
	checkSummaries(t, got, []aggWant{{unit: ucum + "|{score}", n: 3, subjects: 0, sum: 9, min: 1, max: 4, mean: 3, sq: 6, quantiles: []float64{4}}})
	samples, err := agg.Samples(e.ctx, q)
	if err != nil {
		t.Fatalf("Samples: %v", err)
	}
	var want []storage.Sample
	for i, n := range []float64{4, 1, 4} {
		want = append(want, storage.Sample{ID: fmt.Sprintf("n%d", i), System: ucum, Code: "{score}", Num: n, Date: storage.MinDate})
	}
	wantList(t, sampleKeys(samples), sampleKeys(want), "samples")
}
