package resources

import (
	"encoding/json"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

func quantity(value, system, code, unit string) node {
	m := map[string]any{"value": json.Number(value)}
	if system != "" {
		m["system"] = system
	}
	if code != "" {
		m["code"] = code
	}
	if unit != "" {
		m["unit"] = unit
	}
	return node{m, "Quantity"}
}

func TestIndexQuantity(t *testing.T) {
	p := param("value-quantity", storage.KindQuantity)
	const canon = "value-quantity:canonical"
	tests := []struct {
		name   string
		n      node
		params []string
		codes  []string
		nums   []float64
	}{
		{"ucum mg with unit text", quantity("5.4", ucumSystem, "mg", "milligram"),
			[]string{p.Code, p.Code, canon}, []string{"mg", "milligram", "g"}, []float64{5.4, 5.4, 0.0054}},
		{"kg converts to g", quantity("70", ucumSystem, "kg", "kg"),
			[]string{p.Code, canon}, []string{"kg", "g"}, []float64{70, 70000}},
		// Already canonical: searches in convertible units look only at the
		// canonical parameter, so the value is there too.
		{"canonical unit", quantity("3", ucumSystem, "g", ""),
			[]string{p.Code, canon}, []string{"g", "g"}, []float64{3, 3}},
		{"pressure", quantity("150", ucumSystem, "mm[Hg]", "mmHg"),
			[]string{p.Code, p.Code, canon}, []string{"mm[Hg]", "mmHg", "Pa"}, []float64{150, 150, 150 * 133.322387415}},
		{"annotation", quantity("72", ucumSystem, "{beats}/min", "beats/minute"),
			[]string{p.Code, p.Code, canon}, []string{"{beats}/min", "beats/minute", "/min"}, []float64{72, 72, 72}},
		{"temperature is affine", quantity("37.5", ucumSystem, "Cel", ""), []string{p.Code}, []string{"Cel"}, []float64{37.5}},
		{"no code", quantity("3", "", "", "tablets"), []string{p.Code}, []string{"tablets"}, []float64{3}},
		{"not ucum", quantity("5", "http://other", "mg", ""), []string{p.Code}, []string{"mg"}, []float64{5}},
		{"no value", node{map[string]any{"code": "mg"}, "Quantity"}, nil, nil, nil},
	}
	for _, tt := range tests {
		got := indexQuantity(p, tt.n)
		if len(got) != len(tt.codes) {
			t.Errorf("%s: got %+v", tt.name, got)
			continue
		}
		for i := range got {
			if got[i].Param != tt.params[i] || got[i].Code != tt.codes[i] || !near(got[i].Num, tt.nums[i]) || got[i].Kind != storage.KindQuantity {
				t.Errorf("%s[%d] = %+v, want %s %s %v", tt.name, i, got[i], tt.params[i], tt.codes[i], tt.nums[i])
			}
		}
	}
	rng := indexQuantity(p, node{map[string]any{"low": map[string]any{"value": json.Number("1")}, "high": map[string]any{"value": json.Number("3")}}, "Range"})
	if len(rng) != 1 || rng[0].NumLow != 1 || rng[0].NumHigh != 3 || rng[0].Num != 2 {
		t.Errorf("Range = %+v", rng)
	}
}

func TestCompileQuantitySemantics(t *testing.T) {
	r := registry(t)
	p := param("value-quantity", storage.KindQuantity)
	mg := indexQuantity(p, quantity("5.4", ucumSystem, "mg", "mg"))
	g := indexQuantity(p, quantity("0.0054", ucumSystem, "g", "g"))
	mmhg := indexQuantity(p, quantity("120", ucumSystem, "mm[Hg]", "mmHg"))
	tests := []struct {
		value       string
		mg, g, mmhg bool
	}{
		{"5.4", true, false, false},
		{"5.4|http://unitsofmeasure.org|mg", true, true, false},
		{"5.4||mg", true, false, false},
		{"0.0054|http://unitsofmeasure.org|g", true, true, false},
		{"5400|http://unitsofmeasure.org|ug", true, true, false},
		{"gt5|http://unitsofmeasure.org|mg", true, true, false},
		{"lt5|http://unitsofmeasure.org|mg", false, false, false},
		{"120|http://unitsofmeasure.org|mm[Hg]", false, false, true},
		{"16|http://unitsofmeasure.org|kPa", false, false, true},
		{"ge100||mmHg", false, false, true},
		{"5.4|http://other.org|mg", false, false, false},
		// Unitless values compare with the numbers as written only: 120
		// mm[Hg] is 15999 Pa, which must not make it greater than 130.
		{"gt130", false, false, false},
		{"lt130", true, true, true},
		{"gt100", false, false, true},
		{"120", false, false, true},
		{"lt16.1|http://unitsofmeasure.org|kPa", false, false, true},
		{"lt15.9|http://unitsofmeasure.org|kPa", false, false, false},
		{"gt0.005|http://unitsofmeasure.org|g", true, true, false},
		{"gt5000|http://unitsofmeasure.org|g", false, false, false},
	}
	for _, tt := range tests {
		e := compileOne(t, r, "Observation", "value-quantity", "", tt.value)
		for _, c := range []struct {
			name    string
			entries []storage.Entry
			want    bool
		}{{"5.4 mg", mg, tt.mg}, {"0.0054 g", g, tt.g}, {"120 mm[Hg]", mmhg, tt.mmhg}} {
			if got := matches(t, e, c.entries); got != c.want {
				t.Errorf("value-quantity=%s on %s = %v, want %v (%s)", tt.value, c.name, got, c.want, e)
			}
		}
	}
}
