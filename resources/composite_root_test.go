package resources

import (
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

// indexWithoutMarkers indexes as before root combinations were left to the
// components' entries: every combination written, no marker (what a
// resource stored by an older version holds).
func indexWithoutMarkers(t *testing.T, r *Registry, typ string, res map[string]any) []storage.Entry {
	t.Helper()
	var out []storage.Entry
	for _, p := range r.params(typ) {
		if p.compiled == nil {
			continue
		}
		col, err := p.compiled.Evaluate(res)
		if err != nil {
			t.Fatalf("%s: %v", p.Code, err)
		}
		for _, n := range col {
			if out, err = r.appendEntries(out, p, n, nil); err != nil {
				t.Fatalf("%s: %v", p.Code, err)
			}
		}
	}
	return out
}

func TestRootCompositesMatchAsCombinations(t *testing.T) {
	r := registry(t)
	obs := map[string]string{
		// one coding and a text, a value, no components
		"plain": `{"resourceType":"Observation","id":"plain","status":"final",
			"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}],"text":"Systolic"},
			"valueQuantity":{"value":150,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}`,
		// a panel: no value of its own, two components
		"panel": `{"resourceType":"Observation","id":"panel","status":"final",
			"code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},
			"component":[
			 {"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":150,"system":"http://unitsofmeasure.org","code":"mm[Hg]"}},
			 {"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":90,"system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]}`,
		// two codings of one code
		"codings": `{"resourceType":"Observation","id":"codings","status":"final",
			"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"},{"system":"http://snomed.info/sct","code":"271649006"}]},
			"valueQuantity":{"value":150,"system":"http://unitsofmeasure.org","code":"mm[Hg]"}}`,
		// a value of its own and a component
		"both": `{"resourceType":"Observation","id":"both","status":"final",
			"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},
			"valueQuantity":{"value":150,"system":"http://unitsofmeasure.org","code":"mm[Hg]"},
			"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":90,"system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]}`,
	}
	const mmHg = "|http://unitsofmeasure.org|mm[Hg]"
	tests := []struct {
		code, mod, value string
		want             map[string]bool // ids matching
	}{
		{"code-value-quantity", "", "http://loinc.org|8480-6$gt140" + mmHg, map[string]bool{"plain": true, "codings": true, "both": true}},
		{"code-value-quantity", "", "http://loinc.org|8480-6$lt140" + mmHg, nil},
		{"code-value-quantity", "", "http://snomed.info/sct|271649006$150" + mmHg, map[string]bool{"codings": true}},
		{"code-value-quantity", "", "http://snomed.info/sct|271649006$lt100" + mmHg, nil},
		{"code-value-quantity", "", "http://loinc.org|8480-6$gt19000|http://unitsofmeasure.org|Pa", map[string]bool{"plain": true, "codings": true, "both": true}},
		{"code-value-quantity", "", "http://loinc.org|8480-6$gt150", nil},
		{"code-value-quantity", "", "http://loinc.org|8480-6$150", map[string]bool{"plain": true, "codings": true, "both": true}},
		{"code-value-quantity", "", "Systolic$150", nil}, // a token's text is not its code
		// a component's code is not the Observation's
		{"code-value-quantity", "", "http://loinc.org|8462-4$90" + mmHg, nil},
		{"code-value-quantity", "", "http://loinc.org|85354-9$gt0", nil},
		{"code-value-quantity", "missing", "true", map[string]bool{"panel": true}},
		{"code-value-quantity", "missing", "false", map[string]bool{"plain": true, "codings": true, "both": true}},
		// combo: the Observation and each component, never across them
		{"combo-code-value-quantity", "", "http://loinc.org|8480-6$gt140" + mmHg, map[string]bool{"plain": true, "panel": true, "codings": true, "both": true}},
		{"combo-code-value-quantity", "", "http://loinc.org|8480-6$lt100" + mmHg, nil},
		{"combo-code-value-quantity", "", "http://loinc.org|8462-4$90" + mmHg, map[string]bool{"panel": true, "both": true}},
		{"combo-code-value-quantity", "", "http://loinc.org|8462-4$150" + mmHg, nil},
		{"combo-code-value-quantity", "", "http://loinc.org|85354-9$gt0", nil},
		{"combo-code-value-quantity", "", "http://loinc.org|8462-4$lt12000|http://unitsofmeasure.org|Pa", map[string]bool{"panel": true, "both": true}},
		{"combo-code-value-quantity", "missing", "true", nil},
		{"component-code-value-quantity", "", "http://loinc.org|8480-6$150" + mmHg, map[string]bool{"panel": true}},
	}
	entries := map[string][]storage.Entry{}
	old := map[string][]storage.Entry{}
	for id, src := range obs {
		res := decode(t, src)
		es, err := r.Index("Observation", res)
		if err != nil {
			t.Fatalf("index %s: %v", id, err)
		}
		entries[id] = es
		old[id] = indexWithoutMarkers(t, r, "Observation", res)
	}
	// What is left out: the plain and codings Observations keep no
	// combination of code-value-quantity or combo-code-value-quantity.
	for _, id := range []string{"plain", "codings"} {
		markers := 0
		for _, e := range entries[id] {
			if e.Kind == storage.KindComposite && e.Param != "component-code-value-quantity" {
				t.Errorf("%s keeps composite entry %s", id, e.Param)
			}
			if e.Kind == storage.KindToken && e.Code == rootMarkerCode {
				markers++
			}
		}
		if markers != 2 {
			t.Errorf("%s: %d markers, want 2 (code-value-quantity, combo-code-value-quantity)", id, markers)
		}
	}
	for _, tt := range tests {
		e, err := r.Compile("Observation", tt.code, tt.mod, []string{tt.value})
		if err != nil {
			t.Fatalf("compile %s:%s=%s: %v", tt.code, tt.mod, tt.value, err)
		}
		for id := range obs {
			for what, es := range map[string][]storage.Entry{"indexed now": entries[id], "indexed before": old[id]} {
				got, err := storage.Matches(e, id, es)
				if err != nil {
					t.Fatalf("%s=%s on %s: %v", tt.code, tt.value, id, err)
				}
				if got != tt.want[id] {
					t.Errorf("%s:%s=%s on %s (%s) = %v, want %v", tt.code, tt.mod, tt.value, id, what, got, tt.want[id])
				}
			}
			// IndexParams of what the expression reads gives the same answer.
			some, err := r.IndexParams("Observation", decode(t, obs[id]), storage.Params(e))
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := storage.Matches(e, id, some); got != tt.want[id] {
				t.Errorf("%s=%s on %s with IndexParams = %v", tt.code, tt.value, id, got)
			}
		}
	}
}
