package demo

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"reflect"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

var end = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

// byType indexes a data set for the checks below.
func byType(ds DataSet) map[string][]map[string]any {
	out := map[string][]map[string]any{}
	for _, r := range ds.Resources {
		t := r["resourceType"].(string)
		out[t] = append(out[t], r)
	}
	return out
}

func subjectOf(r map[string]any) string {
	s, _ := r["subject"].(map[string]any)
	ref, _ := s["reference"].(string)
	return ref
}

func codeOf(r map[string]any) string {
	c, _ := r["code"].(map[string]any)
	cs, _ := c["coding"].([]any)
	if len(cs) == 0 {
		return ""
	}
	return cs[0].(map[string]any)["code"].(string)
}

func num(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case int:
		return float64(x)
	case json.Number:
		f, _ := x.Float64()
		return f
	}
	panic("not a number")
}

func valueOf(r map[string]any) float64 {
	return num(r["valueQuantity"].(map[string]any)["value"])
}

func when(t *testing.T, r map[string]any) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339, r["effectiveDateTime"].(string))
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// slope is the least-squares change per day of the points (days, values).
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	return (n*sxy - sx*sy) / (n*sxx - sx*sx)
}

// cdcFactor is the CDC 2022 MME conversion factor by RxNorm clinical drug
// (the ingredient looked up by hand from the product names), and whether
// the dose is a patch rate in mcg/hr.
var cdcFactor = map[string]float64{
	"835603": 0.2, "857002": 1.0, "1049621": 1.5, "1049502": 1.5, "891878": 1.0,
	"892582": 1.0, "245134": 2.4, "897696": 5.0, "993781": 0.15,
}

var benzodiazepines = map[string]bool{"308048": true}

// mmePerDay computes a prescription's MME/day from its structured dosage.
func mmePerDay(t *testing.T, mr map[string]any) (float64, bool) {
	t.Helper()
	rx := codeOfField(mr["medicationCodeableConcept"])
	f, ok := cdcFactor[rx]
	if !ok {
		return 0, false
	}
	di := mr["dosageInstruction"].([]any)[0].(map[string]any)
	rep := di["timing"].(map[string]any)["repeat"].(map[string]any)
	dose := num(di["doseAndRate"].([]any)[0].(map[string]any)["doseQuantity"].(map[string]any)["value"])
	unit := di["doseAndRate"].([]any)[0].(map[string]any)["doseQuantity"].(map[string]any)["code"].(string)
	if unit == "ug/h" {
		return dose * f, true // a patch: the rate is the daily measure
	}
	perDay := num(rep["frequency"]) / num(rep["period"])
	if rep["periodUnit"] != "d" {
		t.Fatalf("unexpected period unit %v", rep["periodUnit"])
	}
	return dose * perDay * f, true
}

func codeOfField(v any) string {
	return codeOf(map[string]any{"code": v})
}

func TestGenerateShape(t *testing.T) {
	ds := Generate(Options{End: end})
	ty := byType(ds)
	if got := len(ty["Patient"]); got != 25 {
		t.Fatalf("patients: %d, want 25", got)
	}
	idRE := regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)
	seen := map[string]bool{}
	for _, r := range ds.Resources {
		key := r["resourceType"].(string) + "/" + r["id"].(string)
		if !idRE.MatchString(r["id"].(string)) {
			t.Errorf("bad id %s", key)
		}
		if seen[key] {
			t.Errorf("duplicate %s", key)
		}
		seen[key] = true
	}
	// Every reference points to a resource earlier in the list.
	defined := map[string]bool{}
	var walk func(v any, from string)
	walk = func(v any, from string) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["reference"].(string); ok && !defined[ref] {
				t.Errorf("%s references %s, not defined before it", from, ref)
			}
			for _, c := range x {
				walk(c, from)
			}
		case []any:
			for _, c := range x {
				walk(c, from)
			}
		}
	}
	for _, r := range ds.Resources {
		key := r["resourceType"].(string) + "/" + r["id"].(string)
		defined[key] = true
		walk(r, key)
	}

	// Pain: about 90 daily scores each, 0-10, whose least-squares trend
	// has the sign of the planned course.
	courses := map[Course]int{}
	pain := map[string][]map[string]any{}
	for _, o := range ty["Observation"] {
		if codeOf(o) == LOINCPain {
			pain[subjectOf(o)] = append(pain[subjectOf(o)], o)
		}
	}
	for _, p := range ds.Patients {
		courses[p.Course]++
		obs := pain["Patient/"+p.ID]
		if len(obs) < 75 || len(obs) > 90 {
			t.Errorf("%s: %d pain scores, want 75..90 (daily with a few missed)", p.ID, len(obs))
		}
		var xs, ys []float64
		for _, o := range obs {
			v := valueOf(o)
			if v < 0 || v > 10 || v != math.Trunc(v) {
				t.Errorf("%s: pain score %v", o["id"], v)
			}
			xs = append(xs, when(t, o).Sub(end).Hours()/24)
			ys = append(ys, v)
		}
		change := slope(xs, ys) * 90
		switch p.Course {
		case Improving:
			if change > -2 {
				t.Errorf("%s improving: fitted change %.1f over 90 days", p.ID, change)
			}
		case Worsening:
			if change < 2 {
				t.Errorf("%s worsening: fitted change %.1f over 90 days", p.ID, change)
			}
		case Stable:
			if math.Abs(change) > 1 {
				t.Errorf("%s stable: fitted change %.1f over 90 days", p.ID, change)
			}
		}
	}
	for _, c := range []Course{Improving, Stable, Worsening} {
		if courses[c] < 8 {
			t.Errorf("%d %s patients, want at least 8", courses[c], c)
		}
	}

	// Opioids: MME/day computed here with the CDC factors spans low to one
	// patient above 90; one patient has a benzodiazepine besides an opioid.
	mme := map[string]float64{}
	opioidPatients, benzoWithOpioid := map[string]bool{}, 0
	benzo := map[string]bool{}
	for _, mr := range ty["MedicationRequest"] {
		if mr["status"] != "active" {
			t.Errorf("%s not active", mr["id"])
		}
		rx := codeOfField(mr["medicationCodeableConcept"])
		if benzodiazepines[rx] {
			benzo[subjectOf(mr)] = true
			continue
		}
		v, ok := mmePerDay(t, mr)
		if !ok {
			t.Errorf("%s: %s is neither an opioid nor a benzodiazepine of the table", mr["id"], rx)
		}
		mme[subjectOf(mr)] += v
		opioidPatients[subjectOf(mr)] = true
	}
	for s := range benzo {
		if opioidPatients[s] {
			benzoWithOpioid++
		}
	}
	var totals []float64
	above90 := 0
	for _, v := range mme {
		totals = append(totals, v)
		if v > 90 {
			above90++
		}
	}
	sort.Float64s(totals)
	if above90 != 1 || benzoWithOpioid != 1 || totals[0] >= 20 || len(totals) < 20 {
		t.Errorf("MME totals %v: %d above 90 (want 1), %d opioid+benzodiazepine (want 1), want the lowest under 20 and 20+ patients on opioids",
			totals, above90, benzoWithOpioid)
	}

	// Vitals: device data with noise, a gap of 2+ days, and sustained
	// breaches over the last days for the planned patients.
	for _, p := range ds.Patients {
		spo2 := map[int]float64{}
		var days []int
		for _, o := range ty["Observation"] {
			if subjectOf(o) != "Patient/"+p.ID || codeOf(o) != LOINCSpO2 {
				continue
			}
			d := int(math.Round(when(t, o).Sub(end).Hours() / 24))
			spo2[d] = valueOf(o)
			days = append(days, d)
		}
		sort.Ints(days)
		longest := 0
		for i := 1; i < len(days); i++ {
			longest = max(longest, days[i]-days[i-1]-1)
		}
		if longest < 2 {
			t.Errorf("%s: no device gap of 2+ days", p.ID)
		}
		lowLate := 0
		for d := -4; d <= 0; d++ {
			if v, ok := spo2[d]; ok && v < 92 {
				lowLate++
			}
		}
		wantBreach := false
		for _, b := range p.Breaches {
			wantBreach = wantBreach || b == LOINCSpO2
		}
		if wantBreach && lowLate < 5 || !wantBreach && lowLate > 1 {
			t.Errorf("%s: %d of the last 5 SpO2 readings under 92 (breach planned: %v)", p.ID, lowLate, wantBreach)
		}
	}
	breaches := map[string]bool{}
	for _, p := range ds.Patients {
		for _, b := range p.Breaches {
			breaches[b] = true
		}
	}
	for _, c := range []string{LOINCSpO2, LOINCBP, LOINCHeartRate, LOINCGlucose, LOINCWeight} {
		if !breaches[c] {
			t.Errorf("no patient with a sustained %s breach", c)
		}
	}

	// PEG weekly, care plans with goals, weekly VR visits with two planned.
	for _, p := range ds.Patients {
		peg, visits, planned := 0, 0, 0
		for _, o := range ty["Observation"] {
			if subjectOf(o) == "Patient/"+p.ID && codeOf(o) == LOINCPEGPanel {
				peg++
			}
		}
		var starts []time.Time
		for _, e := range ty["Encounter"] {
			if subjectOf(e) != "Patient/"+p.ID {
				continue
			}
			if e["class"].(map[string]any)["code"] != "VR" {
				t.Errorf("%s: class %v", e["id"], e["class"])
			}
			visits++
			st, _ := time.Parse(time.RFC3339, e["period"].(map[string]any)["start"].(string))
			starts = append(starts, st)
			if e["status"] == "planned" {
				planned++
				if !st.After(end) {
					t.Errorf("%s planned in the past", e["id"])
				}
			}
		}
		for i := 1; i < len(starts); i++ {
			if starts[i].Sub(starts[i-1]) != 7*24*time.Hour {
				t.Errorf("%s: visits %v and %v are not a week apart", p.ID, starts[i-1], starts[i])
			}
		}
		if peg != 13 || visits < 13 || planned != 2 {
			t.Errorf("%s: %d PEG panels (want 13), %d visits (want 13+), %d planned (want 2)", p.ID, peg, visits, planned)
		}
	}
	if len(ty["CarePlan"]) != 25 || len(ty["Goal"]) != 25 {
		t.Errorf("%d care plans, %d goals", len(ty["CarePlan"]), len(ty["Goal"]))
	}
	for _, cp := range ty["CarePlan"] {
		b, _ := json.Marshal(cp["category"])
		if !regexp.MustCompile(`"80764-4"`).Match(b) {
			t.Errorf("%s lacks the pain plan category", cp["id"])
		}
	}
}

func TestGenerateDeterministic(t *testing.T) {
	a, _ := json.Marshal(Generate(Options{End: end, Patients: 5}))
	b, _ := json.Marshal(Generate(Options{End: end.Add(7 * time.Hour), Patients: 5}))
	if string(a) != string(b) {
		t.Fatal("two generations with the same options differ")
	}
	c, _ := json.Marshal(Generate(Options{End: end, Patients: 5, Seed: 99}))
	if string(a) == string(c) {
		t.Fatal("another seed gave the same data")
	}
}

// TestLoadIdempotent loads a small data set through the real import
// pipeline (schema validation included) into SQLite, then again: the
// second load writes nothing and no resource gets a second version.
func TestLoadIdempotent(t *testing.T) {
	ctx := context.Background()
	be, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	srv, err := fhir.New(fhir.Config{BaseURL: "http://demo.test", Backend: be, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	day, err := EndDay(ctx, be.KV(), end.Add(29*time.Hour))
	if err != nil || !day.Equal(end) {
		t.Fatalf("end day %v, %v", day, err)
	}
	// A later run keeps the first run's day.
	if day, _ = EndDay(ctx, be.KV(), end.AddDate(0, 0, 3)); !day.Equal(end) {
		t.Fatalf("end day moved to %v", day)
	}
	// 12 patients cover every regimen; 8 days keep it quick.
	ds := Generate(Options{End: day, Patients: 12, Days: 8})
	rep, err := Load(ctx, srv, be, ds, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Stored != len(ds.Resources) || rep.Existing != 0 {
		t.Fatalf("first load %+v, want all %d stored", rep, len(ds.Resources))
	}
	rep, err = Load(ctx, srv, be, ds, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if want := (LoadReport{Generated: len(ds.Resources), Existing: len(ds.Resources)}); !reflect.DeepEqual(rep, want) {
		t.Fatalf("second load %+v, want %+v", rep, want)
	}
	for _, r := range ds.Resources {
		rec, err := be.Read(ctx, r["resourceType"].(string), r["id"].(string))
		if err != nil || rec.VersionID != 1 {
			t.Fatalf("%s/%s: version %d, %v", r["resourceType"], r["id"], rec.VersionID, err)
		}
	}
	// A resource removed by hand is put back by the next run.
	victim := ds.Resources[len(ds.Resources)-1]
	typ, id := victim["resourceType"].(string), victim["id"].(string)
	if _, err := be.Commit(ctx, storage.Write{Record: storage.Record{Type: typ, ID: id, VersionID: 2, Deleted: true, Method: "DELETE", LastUpdated: time.Now()}, ExpectVersion: 1}); err != nil {
		t.Fatal(err)
	}
	if rep, err = Load(ctx, srv, be, ds, t.TempDir()); err != nil || rep.Stored != 1 {
		t.Fatalf("after a delete: %+v, %v; want 1 stored", rep, err)
	}
}
