package resources

import (
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

func TestCompositeEntries(t *testing.T) {
	p := param("code-value-quantity", storage.KindComposite)
	tok := func(c string) storage.Entry { return storage.Entry{Kind: storage.KindToken, Code: c} }
	num := func(v float64) storage.Entry { return storage.Entry{Kind: storage.KindQuantity, Num: v} }
	tests := []struct {
		name  string
		parts [][]storage.Entry
		want  int
	}{
		{"one each", [][]storage.Entry{{tok("a")}, {num(1)}}, 1},
		{"cross product", [][]storage.Entry{{tok("a"), tok("b")}, {num(1), num(2)}}, 4},
		{"missing component", [][]storage.Entry{{tok("a")}, nil}, 0},
	}
	for _, tt := range tests {
		got := compositeEntries(p, tt.parts)
		if len(got) != tt.want {
			t.Errorf("%s: %d entries, want %d", tt.name, len(got), tt.want)
		}
		for _, e := range got {
			if len(e.Parts) != len(tt.parts) || e.Param != p.Code || e.Kind != storage.KindComposite {
				t.Errorf("%s: entry %+v", tt.name, e)
			}
		}
	}
	// Canonical quantities go to the companion parameter, never mixed
	// with the values as written; parts lose their Param either way.
	canonQ := storage.Entry{Param: "value-quantity" + canonicalSuffix, Kind: storage.KindQuantity, Code: "Pa", Num: 19998}
	writtenQ := storage.Entry{Param: "value-quantity", Kind: storage.KindQuantity, Code: "mm[Hg]", Num: 150}
	got := compositeEntries(p, [][]storage.Entry{{tok("a"), tok("b")}, {writtenQ, canonQ}})
	byParam := map[string][]float64{}
	for _, e := range got {
		for _, part := range e.Parts {
			if part.Param != "" {
				t.Errorf("part keeps Param %q", part.Param)
			}
		}
		byParam[e.Param] = append(byParam[e.Param], e.Parts[1].Num)
	}
	if fmt.Sprint(byParam[p.Code]) != "[150 150]" || fmt.Sprint(byParam[p.Code+canonicalSuffix]) != "[19998 19998]" || len(byParam) != 2 {
		t.Errorf("canonical split = %v", byParam)
	}
	var many []storage.Entry
	for i := range 20 {
		many = append(many, tok(fmt.Sprint(i)))
	}
	if got := compositeEntries(p, [][]storage.Entry{many, many}); len(got) != maxCompositeEntries {
		t.Errorf("cap: %d entries, want %d", len(got), maxCompositeEntries)
	}
}

func TestCompileCompositeGolden(t *testing.T) {
	r := registry(t)
	e := compileOne(t, r, "Observation", "code-value-quantity", "", `http://loinc.org|8480-6$gt100|http://unitsofmeasure.org|mm[Hg]`)
	// mm[Hg] is converted to the canonical Pa: 100 * 133.322387415.
	hundred := 100.0 // a variable, so the product is rounded at run time like the compiler's
	pa := strconv.FormatFloat(hundred*ucumFactor["mm[Hg]"].factor, 'g', -1, 64)
	code := `(And (Cmp System Eq "http://loinc.org") (Cmp Code Eq "8480-6"))`
	value := `(And (Cmp Num Gt ` + pa + `) (Cmp Code Eq "Pa") (Cmp System Eq "http://unitsofmeasure.org"))`
	// The combinations, or (an Observation's code-value-quantity is at its
	// root) the components' own entries and the marker.
	want := `(Or (Match code-value-quantity:canonical composite (And (Part 0 ` + code + `) (Part 1 ` + value + `))) ` +
		`(And (Match code token ` + code + `) (Match value-quantity:canonical quantity ` + value + `) (Match code-value-quantity token (Cmp Code Eq "root"))))`
	if e.String() != want {
		t.Errorf("composite = %s\nwant        %s", e, want)
	}
}

// TestCompileNeverPanics feeds hostile values to every parameter of a few
// types: each must compile or fail with one of the documented sentinels.
func TestCompileNeverPanics(t *testing.T) {
	r := registry(t)
	values := []string{"", ",", "|", "||", "$", "$$", `\`, `\\`, "a|b|c|d", "gt", "ap", "eq-", "1e400", "2020-02-30T25:61",
		"Patient/", "/1", "http://", "%00", "\x00", "é", "ne2020,lt", "1|http://unitsofmeasure.org|", "x$y$z", "true"}
	mods := []string{"", "missing", "not", "exact", "contains", "text", "of-type", "above", "below", "identifier", "Patient", "in", "bogus"}
	for _, typ := range []string{"Observation", "Patient", "ValueSet"} {
		for _, p := range r.Params(typ) {
			for _, m := range mods {
				for _, v := range values {
					_, err := r.Compile(typ, p.Code, m, []string{v})
					if err != nil && !errors.Is(err, ErrInvalidValue) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrValueSet) {
						t.Errorf("Compile(%s.%s:%s=%q): unexpected error %v", typ, p.Code, m, v, err)
					}
				}
			}
		}
	}
}
