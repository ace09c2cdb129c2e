package rpm

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzObservation feeds arbitrary JSON objects to what the observer does
// with a reading: find its measures, enrich it, read it back for the
// rules. Nothing may panic, the result must still encode, and enriching
// twice changes nothing the second time.
func FuzzObservation(f *testing.F) {
	th := defaults(f)
	f.Add(`{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2708-6"}]},"effectiveDateTime":"2026-01-01","valueQuantity":{"value":91,"code":"%"}}`)
	f.Add(`{"code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":171,"code":"mm[Hg]"}},7,null]}`)
	f.Add(`{"code":{"coding":[{"system":"http://loinc.org","code":"72514-3"}]},"valueInteger":"x","interpretation":7,"referenceRange":null}`)
	f.Add(`{"code":{"coding":[{"system":"http://loinc.org","code":"8310-5"}]},"valueQuantity":{"value":1e308,"code":"[degF]"},"effectivePeriod":{"start":5}}`)
	f.Fuzz(func(t *testing.T, s string) {
		d := json.NewDecoder(bytes.NewReader([]byte(s)))
		d.UseNumber()
		var obs map[string]any
		if d.Decode(&obs) != nil || obs == nil {
			return
		}
		def := func(m *Measure) Limits { return m.Defaults() }
		Enrich(obs, th.Parts(obs), def)
		if _, err := json.Marshal(obs); err != nil {
			t.Fatalf("enriched reading does not encode: %v", err)
		}
		if Enrich(obs, th.Parts(obs), def) {
			t.Fatalf("second enrichment changed %s", s)
		}
		for _, m := range th.Measures() {
			th.ReadingOf("Observation/x", obs, m)
			GoalLimits(m, obs, "x")
		}
	})
}

// FuzzThresholds: any file is either refused or yields measures whose
// normal range the bands call N.
func FuzzThresholds(f *testing.F) {
	f.Add(string(defaultThresholds))
	f.Add(`{"measures":[{"key":"x","codes":["1"],"unit":"%","low":{"op":"<","value":5},"normal":{"low":5},"rule":{"kind":"count","k":1,"n":1,"within":"1h"}}]}`)
	f.Fuzz(func(t *testing.T, s string) {
		th, err := ParseThresholds([]byte(s))
		if err != nil {
			return
		}
		for _, m := range th.Measures() {
			l := m.Defaults()
			for _, v := range []*float64{l.Normal.Low, l.Normal.High} {
				if v != nil && l.Interpret(*v) != Normal {
					t.Fatalf("%s: normal bound %v interpreted %s", m.Key, *v, l.Interpret(*v))
				}
			}
			m.Rule.Evaluate([]Reading{{Ref: "a", Interpretation: "H"}, {Ref: "b", Interpretation: "H", Value: 1, HasValue: true}})
		}
	})
}
