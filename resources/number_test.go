package resources

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9*math.Max(1, math.Abs(b)) }

func TestParseDecimal(t *testing.T) {
	tests := []struct {
		in        string
		v, lo, hi float64
	}{
		{"1.5", 1.5, 1.45, 1.55},
		{"100", 100, 99.5, 100.5},
		{"-2", -2, -2.5, -1.5},
		{"0.010", 0.01, 0.0095, 0.0105},
		{"1e2", 100, 50, 150},
		{"1.0e-1", 0.1, 0.095, 0.105},
	}
	for _, tt := range tests {
		d, err := parseDecimal(tt.in)
		if err != nil || !near(d.v, tt.v) || !near(d.lo, tt.lo) || !near(d.hi, tt.hi) {
			t.Errorf("parseDecimal(%q) = %+v, %v; want %v [%v, %v)", tt.in, d, err, tt.v, tt.lo, tt.hi)
		}
	}
	for _, bad := range []string{"", "-", "1.", ".5", "1.2.3", "0x10", "Inf", "NaN", "1e", "1e999", "1,5"} {
		if _, err := parseDecimal(bad); err == nil {
			t.Errorf("parseDecimal(%q) accepted", bad)
		}
	}
}

func TestIndexNumber(t *testing.T) {
	p := param("probability", storage.KindNumber)
	for _, v := range []any{json.Number("0.5"), 0.5, "0.5"} {
		got := indexNumber(p, node{v, "decimal"})
		if len(got) != 1 || got[0].Num != 0.5 || !near(got[0].NumLow, 0.45) || !near(got[0].NumHigh, 0.55) || got[0].Kind != storage.KindNumber {
			t.Errorf("indexNumber(%#v) = %+v", v, got)
		}
	}
	if got := indexNumber(p, node{true, "boolean"}); got != nil {
		t.Errorf("indexNumber(bool) = %+v", got)
	}
}

func TestCompileNumberSemantics(t *testing.T) {
	r := registry(t)
	p := param("probability", storage.KindNumber)
	entries := func(s string) []storage.Entry { return indexNumber(p, node{json.Number(s), "decimal"}) }
	v100, v99_6, v101 := entries("100"), entries("99.6"), entries("101")
	tests := []struct {
		value            string
		e100, e996, e101 bool
	}{
		{"100", true, true, false},
		{"100.0", true, false, false},
		{"ne100", false, false, true},
		{"gt100", false, false, true},
		{"lt100", false, true, false},
		{"ge100", true, false, true},
		{"le100", true, true, false},
		{"sa99", true, true, true}, // each range starts after [98.5, 99.5)
		{"sa100", false, false, true},
		{"eb101", true, true, false},
		{"eb100", false, false, false},
		{"ap100", true, true, true},
		{"ap80", false, false, false},
		{"1e2", true, true, true},
	}
	for _, tt := range tests {
		e := compileOne(t, r, "RiskAssessment", "probability", "", tt.value)
		for _, c := range []struct {
			name    string
			entries []storage.Entry
			want    bool
		}{{"100", v100, tt.e100}, {"99.6", v99_6, tt.e996}, {"101", v101, tt.e101}} {
			if got := matches(t, e, c.entries); got != c.want {
				t.Errorf("probability=%s on %s = %v, want %v (%s)", tt.value, c.name, got, c.want, e)
			}
		}
	}
}
