package profile

import (
	"path/filepath"
	"testing"

	"github.com/anodyne-fhir/anodyne/conformance/fhirpath"
)

// TestEle1MatchesFHIRPath: the direct computation of ele-1 gives the
// engine's answer on every node of the official examples, and on the
// edge cases (empty object, id only, extension-only primitive, empty array).
func TestEle1MatchesFHIRPath(t *testing.T) {
	expr, err := fhirpath.Parse(ele1Expression)
	if err != nil {
		t.Fatal(err)
	}
	check := func(it item) {
		t.Helper()
		var node fhirpath.Node
		if it.val == nil {
			return // the engine is not handed extension-only primitives as nodes here
		}
		node = fhirpath.NewNode(it.val, it.typ)
		out, err := expr.Evaluate(node)
		if err != nil {
			t.Fatalf("%s: %v", it.path, err)
		}
		want := len(out) == 1 && out[0].Value() == true
		if got := ele1(it); got != want {
			t.Errorf("%s = %s: ele1 %v, FHIRPath %v", it.path, jsonText(it.val), got, want)
		}
	}
	var walk func(v any, path string)
	n := 0
	walk = func(v any, path string) {
		switch x := v.(type) {
		case map[string]any:
			n++
			check(item{val: x, path: path, typ: "Element"})
			for k, c := range x {
				walk(c, path+"."+k)
			}
		case []any:
			for _, c := range x {
				walk(c, path)
			}
		default:
			n++
			check(item{val: x, path: path, typ: "string"})
		}
	}
	files, _ := filepath.Glob("../testdata/examples/*.json")
	for _, f := range files[:60] {
		walk(load(t, f), filepath.Base(f))
	}
	for _, s := range []string{`{}`, `{"id":"a"}`, `{"id":"a","extension":[]}`, `{"extension":[{"url":"u","valueString":"x"}]}`} {
		walk(js(t, s), s)
	}
	if n < 1000 {
		t.Fatalf("only %d nodes", n)
	}
	if !ele1(item{ext: map[string]any{"extension": []any{map[string]any{"url": "u"}}}}) || ele1(item{ext: map[string]any{"id": "x"}}) {
		t.Error("extension-only primitive")
	}
}
