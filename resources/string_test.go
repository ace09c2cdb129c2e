package resources

import (
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Évelyne", "evelyne"},
		{"  Van   der\tBerg ", "van der berg"},
		{"O'Brien-Smith", "o brien smith"},
		{"Straße", "strasse"},
		{"Søren", "soren"},
		{"ÅNGSTRÖM", "angstrom"},
		{"...", ""},
	}
	for _, tt := range tests {
		if got := normalize(tt.in); got != tt.want {
			t.Errorf("normalize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestIndexString(t *testing.T) {
	p := param("name", storage.KindString)
	name := map[string]any{"family": "Chalmers", "given": []any{"Peter", "James"}, "prefix": []any{"Mr."}}
	got := indexString(p, node{name, "HumanName"})
	want := []string{"Chalmers", "Peter", "James", "Mr."}
	if len(got) != len(want) {
		t.Fatalf("HumanName entries = %+v", got)
	}
	for i, w := range want {
		if got[i].Exact != w || got[i].Text != normalize(w) || got[i].Kind != storage.KindString || got[i].Param != "name" {
			t.Errorf("entry %d = %+v, want %s", i, got[i], w)
		}
	}
	addr := map[string]any{"line": []any{"534 Erewhon St"}, "city": "PleasantVille", "postalCode": "3999"}
	if got := indexString(p, node{addr, "Address"}); len(got) != 3 || got[1].Text != "pleasantville" {
		t.Errorf("Address entries = %+v", got)
	}
	if got := indexString(p, node{"", "string"}); len(got) != 0 {
		t.Errorf("empty string gave %+v", got)
	}
}

func TestCompileStringSemantics(t *testing.T) {
	r := registry(t)
	evelyne := indexString(param("name", storage.KindString), node{map[string]any{"family": "Dupont", "given": []any{"Évelyne"}}, "HumanName"})
	tests := []struct {
		mod, value string
		want       bool
	}{
		{"", "eve", true},
		{"", "EVE", true},
		{"", "évelyne", true},
		{"", "velyne", false},
		{"", "dup,xyz", true},
		{"", "xyz", false},
		{"contains", "vely", true},
		{"contains", "xyz", false},
		{"exact", "Évelyne", true},
		{"exact", "evelyne", false},
		{"exact", "Évely", false},
	}
	for _, tt := range tests {
		e := compileOne(t, r, "Patient", "name", tt.mod, tt.value)
		if got := matches(t, e, evelyne); got != tt.want {
			t.Errorf("name:%s=%s on Évelyne Dupont = %v, want %v (%s)", tt.mod, tt.value, got, tt.want, e)
		}
	}
}

func TestCompileStringGolden(t *testing.T) {
	r := registry(t)
	tests := []struct {
		mod    string
		values []string
		want   string
	}{
		{"", []string{"Peter"}, `(Match name string (Cmp Text Prefix "peter"))`},
		{"exact", []string{`a\,b`}, `(Match name string (Cmp Exact Eq "a,b"))`},
		{"", []string{"a,b", "c"}, `(And (Match name string (Or (Cmp Text Prefix "a") (Cmp Text Prefix "b"))) (Match name string (Cmp Text Prefix "c")))`},
		{"missing", []string{"true"}, `(Not (Match name string nil))`},
		{"missing", []string{"false"}, `(Match name string nil)`},
	}
	for _, tt := range tests {
		e, err := r.Compile("Patient", "name", tt.mod, tt.values)
		if err != nil {
			t.Fatalf("Compile(%v): %v", tt.values, err)
		}
		if e.String() != tt.want {
			t.Errorf("Compile(name:%s=%v) = %s, want %s", tt.mod, tt.values, e, tt.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	r := registry(t)
	tests := []struct {
		typ, code, mod string
		values         []string
		want           error
	}{
		{"Patient", "nope", "", []string{"x"}, ErrUnknownParam},
		{"Patient", "name", "", nil, ErrInvalidValue},
		{"Patient", "name", "", []string{""}, ErrInvalidValue},
		{"Patient", "name", "", []string{"..."}, ErrInvalidValue},
		{"Patient", "name", "below", []string{"x"}, ErrInvalidValue},
		{"Patient", "name", "missing", []string{"maybe"}, ErrInvalidValue},
		{"Patient", "name", "", []string{`x\`}, ErrInvalidValue},
		{"Patient", "birthdate", "", []string{"2020-13"}, ErrInvalidValue},
		{"Patient", "birthdate", "", []string{"xx2020"}, ErrInvalidValue},
		{"Patient", "birthdate", "", []string{"2020-02-30"}, ErrInvalidValue},
		{"Observation", "value-quantity", "", []string{"abc"}, ErrInvalidValue},
		{"Observation", "value-quantity", "", []string{"5|x"}, ErrInvalidValue},
		{"Observation", "code", "", []string{"a|b|c"}, ErrInvalidValue},
		{"Observation", "code", "", []string{"|"}, ErrInvalidValue},
		{"Observation", "code", "below", []string{"x"}, ErrUnsupported},
		{"Observation", "code", "in", []string{"http://vs"}, ErrValueSet},
		{"Observation", "subject", "", []string{"not a ref"}, ErrInvalidValue},
		{"Observation", "subject", "Medication", []string{"1"}, ErrInvalidValue},
		{"Observation", "subject", "Patient", []string{"Group/1"}, ErrInvalidValue},
		{"Observation", "code-value-quantity", "", []string{"x"}, ErrInvalidValue},
		{"Observation", "code-value-quantity", "", []string{"x$abc"}, ErrInvalidValue},
		{"Patient", "_id", "", []string{"a b"}, ErrInvalidValue},
		{"RiskAssessment", "probability", "", []string{"1.2.3"}, ErrInvalidValue},
		{"RiskAssessment", "probability", "", []string{"NaN"}, ErrInvalidValue},
	}
	for _, tt := range tests {
		_, err := r.Compile(tt.typ, tt.code, tt.mod, tt.values)
		if err == nil {
			t.Errorf("Compile(%s.%s:%s=%q) succeeded, want %v", tt.typ, tt.code, tt.mod, tt.values, tt.want)
			continue
		}
		wantErr(t, err, tt.want)
	}
}
