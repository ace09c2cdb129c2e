package rpm

import (
	"fmt"
	"testing"
)

func goalJSON(code, detail string, ext string) string {
	if ext != "" {
		ext = `"extension":[{"url":"` + CriticalRangeURL + `","valueRange":` + ext + `}],`
	}
	return fmt.Sprintf(`{"resourceType":"Goal","lifecycleStatus":"active","subject":{"reference":"Patient/p"},
		"target":[{"measure":{"coding":[{"system":"http://loinc.org","code":"9999-9"}]},"detailRange":{"low":{"value":1}}},
		          {%s"measure":{"coding":[{"system":"http://loinc.org","code":%q}]},%s}]}`, ext, code, detail)
}

func q(v float64, unit string) string {
	return fmt.Sprintf(`{"value":%v,"system":"http://unitsofmeasure.org","code":%q}`, v, unit)
}

// TestGoalLimits: each Goal form gives the bands the README promises,
// checked value by value against bands stated independently here.
func TestGoalLimits(t *testing.T) {
	th := defaults(t)
	cases := []struct {
		name, key, goal string
		want            band // expected bands in the measure's unit
		// values to probe (in the measure's unit)
		probe []float64
	}{
		{"SpO2 range moves the critical band out of the target", "spo2",
			goalJSON("2708-6", `"detailRange":{"low":`+q(88, "%")+`,"high":`+q(100, "%")+`}`, ""),
			band{critLo: 88, lo: 88, hi: 100, critHi: inf}, []float64{87.9, 88, 90, 92, 100, 100.1}},
		{"SpO2 low side only keeps the default critical band below it", "spo2",
			goalJSON("59408-5", `"detailRange":{"low":`+q(93, "%")+`}`, ""),
			band{critLo: 92, lo: 93, hi: inf, critHi: inf}, []float64{91.9, 92, 92.9, 93, 99}},
		{"heart rate with an explicit critical range", "heart-rate",
			goalJSON("8867-4", `"detailRange":{"low":`+q(40, "/min")+`,"high":`+q(110, "/min")+`}`, `{"low":`+q(35, "/min")+`,"high":`+q(130, "/min")+`}`),
			band{critLo: 35, lo: 40, hi: 110, critHi: 130}, []float64{34, 35, 39, 40, 110, 111, 130, 131}},
		{"temperature range in °F", "temperature",
			goalJSON("8310-5", `"detailRange":{"high":`+q(100.4, "[degF]")+`}`, ""),
			band{critLo: -inf, lo: -inf, hi: (100.4 - 32) * 5 / 9, critHi: inf}, []float64{37.5, 37.9, 38.1, 40}},
		{"pain <= 4", "pain", goalJSON("72514-3", `"detailQuantity":{"value":4,"comparator":"<=","system":"http://unitsofmeasure.org","code":"{score}"}`, ""),
			band{critLo: -inf, lo: -inf, hi: 4, critHi: inf}, []float64{0, 4, 5, 10}},
		{"glucose >= 80 mg/dL keeps level 2 below", "glucose", goalJSON("41653-7", `"detailQuantity":{"value":80,"comparator":">=","system":"http://unitsofmeasure.org","code":"mg/dL"}`, ""),
			band{critLo: 54, lo: 80, hi: inf, critHi: inf}, []float64{53, 54, 79, 80, 200}},
	}
	for _, c := range cases {
		m := mustKey(t, th, c.key)
		l, ok := GoalLimits(m, decode(t, c.goal), "g1")
		if !ok {
			t.Errorf("%s: no limits", c.name)
			continue
		}
		if l.Source != "Goal/g1" {
			t.Errorf("%s: source %q", c.name, l.Source)
		}
		for _, v := range c.probe {
			if got, want := l.Interpret(v), c.want.interp(v); got != want {
				t.Errorf("%s: %v is %s, want %s", c.name, v, got, want)
			}
		}
		for _, n := range []*float64{l.Normal.Low, l.Normal.High} {
			if n != nil && c.want.interp(*n) != "N" {
				t.Errorf("%s: referenceRange bound %v is not normal", c.name, *n)
			}
		}
	}
	// Goals that say nothing usable about the measure.
	for name, g := range map[string]string{
		"other code":        goalJSON("8867-4", `"detailRange":{"low":`+q(40, "/min")+`}`, ""),
		"unknown unit":      goalJSON("2708-6", `"detailRange":{"low":`+q(0.9, "1")+`}`, ""),
		"exact target":      goalJSON("2708-6", `"detailQuantity":`+q(95, "%"), ""),
		"text only":         goalJSON("2708-6", `"detailString":"keep it up"`, ""),
		"non-LOINC measure": `{"target":[{"measure":{"coding":[{"system":"urn:x","code":"2708-6"}]},"detailRange":{"low":{"value":90,"code":"%"}}}]}`,
	} {
		if _, ok := GoalLimits(mustKey(t, th, "spo2"), decode(t, g), "g"); ok {
			t.Errorf("%s: gave limits", name)
		}
	}
	// The Goal updated last wins, then the lowest id.
	a := goalCandidate{limits: Limits{Source: "Goal/a"}, updated: "2026-01-01T00:00:00Z", id: "a"}
	b := goalCandidate{limits: Limits{Source: "Goal/b"}, updated: "2026-02-01T00:00:00Z", id: "b"}
	c := goalCandidate{limits: Limits{Source: "Goal/c"}, updated: "2026-02-01T00:00:00Z", id: "c"}
	if l, _ := pickGoal([]goalCandidate{c, a, b}); l.Source != "Goal/b" {
		t.Errorf("picked %s, want Goal/b", l.Source)
	}
}
