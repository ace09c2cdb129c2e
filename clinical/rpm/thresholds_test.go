package rpm

import (
	"encoding/json"
	"strings"
	"testing"
)

func defaults(t testing.TB) *Thresholds {
	t.Helper()
	th, err := Defaults()
	if err != nil {
		t.Fatal(err)
	}
	return th
}

// TestInterpretDefaults checks each default against the numbers of the
// shared RPM document (SpO2 < 95, red flag < 92; heart rate < 50 or > 100;
// respiratory rate < 12 or > 24; systolic < 100 or > 160; diastolic < 60
// or > 95; temperature > 37 °C; glucose level 1 <= 70, level 2 < 54 mg/dL;
// pain >= 7), on both sides of every boundary and in other units
// (°F = °C × 9/5 + 32; mmol/L × 18.016 = mg/dL).
func TestInterpretDefaults(t *testing.T) {
	th := defaults(t)
	cases := []struct {
		code string
		v    float64
		unit string
		want string
	}{
		{"2708-6", 95, "%", "N"}, {"2708-6", 94.9, "%", "L"}, {"59408-5", 92, "%", "L"}, {"2708-6", 91.9, "%", "LL"}, {"2708-6", 100, "%", "N"},
		{"8867-4", 50, "/min", "N"}, {"8867-4", 49, "/min", "L"}, {"8867-4", 100, "/min", "N"}, {"8867-4", 101, "/min", "H"},
		{"9279-1", 12, "/min", "N"}, {"9279-1", 11, "/min", "L"}, {"9279-1", 24, "/min", "N"}, {"9279-1", 25, "/min", "H"},
		{"8480-6", 100, "mm[Hg]", "N"}, {"8480-6", 99, "mm[Hg]", "L"}, {"8480-6", 160, "mm[Hg]", "N"}, {"8480-6", 161, "mm[Hg]", "H"},
		{"8462-4", 60, "mm[Hg]", "N"}, {"8462-4", 59, "mm[Hg]", "L"}, {"8462-4", 95, "mm[Hg]", "N"}, {"8462-4", 96, "mm[Hg]", "H"},
		{"8310-5", 37, "Cel", "N"}, {"8310-5", 37.1, "Cel", "H"},
		{"8310-5", 37*9.0/5 + 32 - 0.01, "[degF]", "N"}, {"8310-5", 37.2*9.0/5 + 32, "[degF]", "H"},
		{"41653-7", 71, "mg/dL", "N"}, {"41653-7", 70, "mg/dL", "L"}, {"41653-7", 54, "mg/dL", "L"}, {"41653-7", 53.9, "mg/dL", "LL"},
		{"2339-0", 70.5 / 18.016, "mmol/L", "N"}, {"41653-7", 60 / 18.016, "mmol/L", "L"}, {"41653-7", 50 / 18.016, "mmol/L", "LL"},
		{"72514-3", 6, "{score}", "N"}, {"72514-3", 7, "{score}", "H"}, {"38208-5", 10, "{score}", "H"}, {"72514-3", 0, "{score}", "N"},
	}
	for _, c := range cases {
		m, ok := th.ByCode(c.code)
		if !ok {
			t.Fatalf("code %s has no measure", c.code)
		}
		base, ok := m.ToBase(c.v, c.unit)
		if !ok {
			t.Fatalf("%s: unit %s unknown", c.code, c.unit)
		}
		if got := m.Defaults().Interpret(base); got != c.want {
			t.Errorf("%s %v %s: %s, want %s", c.code, c.v, c.unit, got, c.want)
		}
	}
	if m, _ := th.ByCode("29463-7"); m.Interpreted() || m.Rule.Kind != RuleRise || m.Rule.By != 1 || m.Rule.Within.Hours() != 72 {
		t.Errorf("weight: want no bands and a rise of 1 kg in 72 h, got %+v", m)
	}
	if _, ok := th.ByCode("8302-2"); ok {
		t.Error("body height is no monitored measure")
	}
}

func TestParseThresholdsRefusesBadFiles(t *testing.T) {
	good := `{"key":"x","display":"X","codes":["1-1"],"unit":"%","low":{"op":"<","value":5},"normal":{"low":5},"rule":{"kind":"count","k":2,"n":3,"within":"24h"},"source":"s"}`
	if _, err := ParseThresholds([]byte(`{"measures":[` + good + `]}`)); err != nil {
		t.Fatalf("a good file: %v", err)
	}
	bad := map[string]string{
		"low pointing up":      strings.Replace(good, `"op":"<"`, `"op":">"`, 1),
		"normal not normal":    strings.Replace(good, `"normal":{"low":5}`, `"normal":{"low":4}`, 1),
		"no normal range":      strings.Replace(good, `,"normal":{"low":5}`, ``, 1),
		"unknown rule":         strings.Replace(good, `"kind":"count"`, `"kind":"trend"`, 1),
		"k above n":            strings.Replace(good, `"k":2`, `"k":4`, 1),
		"bad duration":         strings.Replace(good, `"24h"`, `"a day"`, 1),
		"unknown field":        strings.Replace(good, `"source"`, `"sauce"`, 1),
		"bad key":              strings.Replace(good, `"key":"x"`, `"key":"X Y"`, 1),
		"code claimed twice":   good + `,` + strings.Replace(good, `"key":"x"`, `"key":"y"`, 1),
		"zero scale":           strings.Replace(good, `"unit":"%"`, `"unit":"%","units":{"x":{"scale":0}}`, 1),
		"rise without amount":  `{"key":"w","codes":["2-2"],"unit":"kg","rule":{"kind":"rise","within":"72h"}}`,
		"no window":            strings.Replace(good, `,"within":"24h"`, ``, 1),
		"not json":             `{`,
		"measure list missing": ``,
	}
	for name, m := range bad {
		if _, err := ParseThresholds([]byte(`{"measures":[` + m + `]}`)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func decode(t testing.TB, s string) map[string]any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestEnrich(t *testing.T) {
	th := defaults(t)
	def := func(m *Measure) Limits { return m.Defaults() }
	bp := decode(t, `{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},
		"effectiveDateTime":"2026-03-01T08:00:00Z",
		"component":[
		 {"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":171,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}},
		 {"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":80,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]}`)
	parts := th.Parts(bp)
	if len(parts) != 2 || !Enrich(bp, parts, def) {
		t.Fatalf("blood pressure: %d parts", len(parts))
	}
	comps := bp["component"].([]any)
	if got := interpretationCode(asMap(comps[0])); got != "H" {
		t.Errorf("systolic 171: %s, want H", got)
	}
	if got := interpretationCode(asMap(comps[1])); got != "N" {
		t.Errorf("diastolic 80: %s, want N", got)
	}
	if got := interpretationCode(bp); got != "H" {
		t.Errorf("panel: %s, want the worst component (H)", got)
	}
	rr := asMap(asMap(comps[0])["referenceRange"].([]any)[0])
	if asMap(rr["low"])["value"] != json.Number("100") || asMap(rr["high"])["value"] != json.Number("160") {
		t.Errorf("systolic referenceRange: %v", rr)
	}
	r, ok := th.ReadingOf("Observation/bp", bp, mustKey(t, th, "systolic"))
	if !ok || r.Interpretation != "H" || r.Value != 171 || !r.Effective.Equal(t0) {
		t.Errorf("systolic reading: %+v %v", r, ok)
	}

	// The sender's own interpretation and range are kept, and a reading in
	// °F gets its range in °F.
	temp := decode(t, `{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8310-5"}]},
		"valueQuantity":{"value":99.5,"unit":"F","system":"http://unitsofmeasure.org","code":"[degF]"},
		"interpretation":[{"coding":[{"system":"`+Interpretation+`","code":"N"}]}]}`)
	Enrich(temp, th.Parts(temp), def)
	if got := interpretationCode(temp); got != "N" {
		t.Errorf("sender's interpretation replaced: %s", got)
	}
	rr = asMap(temp["referenceRange"].([]any)[0])
	if v := asMap(rr["high"])["value"]; v != json.Number("98.6") {
		t.Errorf("temperature range high in °F: %v, want 98.6", v)
	}

	// A unit the measure does not know is not guessed at.
	odd := decode(t, `{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},
		"valueQuantity":{"value":5,"system":"http://unitsofmeasure.org","code":"/s"}}`)
	if Enrich(odd, th.Parts(odd), def) {
		t.Errorf("heart rate in /s was interpreted: %v", odd)
	}
	// Pain as valueInteger.
	pain := decode(t, `{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"72514-3"}]},"valueInteger":8}`)
	Enrich(pain, th.Parts(pain), def)
	if got := interpretationCode(pain); got != "H" {
		t.Errorf("pain 8: %s", got)
	}
}

func mustKey(t testing.TB, th *Thresholds, key string) *Measure {
	t.Helper()
	m, ok := th.ByKey(key)
	if !ok {
		t.Fatalf("no measure %q", key)
	}
	return m
}
