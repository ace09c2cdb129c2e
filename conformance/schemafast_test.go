package conformance

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestQuickPatterns checks the hand-written forms of the two hottest schema
// patterns against the regexp they replace.
func TestQuickPatterns(t *testing.T) {
	c := quickCompiler{patterns: map[string]func(string) bool{}}
	inputs := []string{"", " ", "a", "a b", "\f", "a\fb", "\t", "x\ty", "\n", "\r\n", "é", "\xff", "\xffa",
		"\u00a0", "\u2028", "\v", "a\vb", "\x00", "http://x/y", "urn:oid:1.2", "abc\x85"}
	for _, src := range []string{`^[ \r\n\t\S]+$`, `^\S*$`} {
		re := regexp.MustCompile(src)
		f, err := c.pattern(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range inputs {
			if got, want := f(in), re.MatchString(in); got != want {
				t.Errorf("pattern %s on %q: hand-written %v, regexp %v", src, in, got, want)
			}
		}
	}
}

func FuzzQuickPatterns(f *testing.F) {
	f.Add("a b")
	f.Add("a\fb")
	f.Add("\xff\t")
	c := quickCompiler{patterns: map[string]func(string) bool{}}
	srcs := []string{`^[ \r\n\t\S]+$`, `^\S*$`}
	var res []*regexp.Regexp
	var fs []func(string) bool
	for _, src := range srcs {
		fn, err := c.pattern(src)
		if err != nil {
			f.Fatal(err)
		}
		res, fs = append(res, regexp.MustCompile(src)), append(fs, fn)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for i := range srcs {
			if got, want := fs[i](s), res[i].MatchString(s); got != want {
				t.Errorf("pattern %s on %q: hand-written %v, regexp %v", srcs[i], s, got, want)
			}
		}
	})
}

// resourcesIn lists every object in v that names a known resource type,
// with its type.
func resourcesIn(v any, out *[]map[string]any) {
	switch x := v.(type) {
	case map[string]any:
		if rt, ok := x["resourceType"].(string); ok && IsResourceType(rt) {
			*out = append(*out, x)
		}
		for _, c := range x {
			resourcesIn(c, out)
		}
	case []any:
		for _, c := range x {
			resourcesIn(c, out)
		}
	}
}

// checkQuickSound compares the quick walk with jsonschema on one resource.
// It reports (certain, schemaValid).
func checkQuickSound(t *testing.T, s *schemaSet, res map[string]any, what string) (bool, bool) {
	t.Helper()
	rt := res["resourceType"].(string)
	sch, err := s.forType(rt)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	certain := s.quick.certain(rt, res)
	valid := sch.Validate(res) == nil
	if certain && !valid {
		t.Errorf("%s: quick walk certain of a %s that jsonschema rejects: %v", what, rt, sch.Validate(res))
	}
	return certain, valid
}

// TestQuickSchemaSound: over every resource in the test data, a resource the
// quick walk is certain of must pass jsonschema; and a resource jsonschema
// accepts should not leave the walk uncertain, or validation falls back to
// the slow path for nothing.
func TestQuickSchemaSound(t *testing.T) {
	s, err := newSchemaSet()
	if err != nil {
		t.Fatal(err)
	}
	var resources, certain, rejected int
	uncertain := map[string]int{}
	for _, pattern := range []string{"testdata/valid/*.json", "testdata/broken/*.json", "testdata/examples/*.json",
		"testdata/synthea/*.json", "testdata/validator-cases/inputs/*.json"} {
		files, _ := filepath.Glob(pattern)
		for _, f := range files {
			obj, _, _ := decodeStrict(readFile(t, f), DefaultMaxDepth)
			var list []map[string]any
			resourcesIn(obj, &list)
			for _, res := range list {
				resources++
				c, v := checkQuickSound(t, s, res, f)
				switch {
				case c:
					certain++
				case v:
					uncertain[res["resourceType"].(string)]++
				default:
					rejected++
				}
			}
		}
	}
	if resources < 1000 {
		t.Fatalf("only %d resources in the test data", resources)
	}
	if len(uncertain) > 0 {
		t.Errorf("the quick walk is uncertain of valid resources: %v", uncertain)
	}
	t.Logf("%d resources: %d certain, %d rejected by jsonschema", resources, certain, rejected)
}

// TestQuickSchemaMutations breaks valid examples in the ways clients do
// (wrong JSON type, unknown element, bad code, empty or odd strings, missing
// elements) and checks that the quick walk is never certain of a resource
// that jsonschema rejects.
func TestQuickSchemaMutations(t *testing.T) {
	s, err := newSchemaSet()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("testdata/examples/*.json")
	sort.Strings(files)
	if len(files) > 80 {
		files = files[:80]
	}
	mutations := []func(v any) (any, bool){
		func(v any) (any, bool) { _, ok := v.(string); return json.Number("1"), ok },
		func(v any) (any, bool) { _, ok := v.(string); return true, ok },
		func(v any) (any, bool) { _, ok := v.(string); return "not a code\f", ok },
		func(v any) (any, bool) { _, ok := v.(string); return "zz-unknown-code", ok },
		func(v any) (any, bool) { _, ok := v.(string); return []any{"x"}, ok },
		func(v any) (any, bool) { _, ok := v.(string); return map[string]any{"x": "y"}, ok },
		func(v any) (any, bool) { _, ok := v.(json.Number); return "12", ok },
		func(v any) (any, bool) { _, ok := v.(bool); return "true", ok },
		func(v any) (any, bool) {
			if a, ok := v.([]any); ok {
				return a[0], true
			}
			return nil, false
		},
		func(v any) (any, bool) { m, ok := v.(map[string]any); return []any{m}, ok },
		func(v any) (any, bool) {
			m, ok := v.(map[string]any)
			if !ok {
				return nil, false
			}
			cp := make(map[string]any, len(m)+1)
			for k, x := range m {
				cp[k] = x
			}
			cp["zzUnknown"] = "x"
			return cp, true
		},
		func(v any) (any, bool) {
			m, ok := v.(map[string]any)
			if !ok || len(m) < 2 {
				return nil, false
			}
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			cp := make(map[string]any, len(m))
			for _, k := range keys[1:] {
				cp[k] = m[k]
			}
			return cp, true
		},
	}
	var tried, rejected int
	for _, f := range files {
		obj, _, _ := decodeStrict(readFile(t, f), DefaultMaxDepth)
		if obj == nil {
			continue
		}
		// Apply each mutation at every 7th eligible location, on a copy.
		for mi, mutate := range mutations {
			n := 0
			for loc := 0; ; loc += 7 {
				mutated, done := mutateAt(obj, mutate, loc, &n)
				if !done {
					break
				}
				n = 0
				m, ok := mutated.(map[string]any)
				if rt, _ := m["resourceType"].(string); !ok || !IsResourceType(rt) {
					continue
				}
				tried++
				if _, valid := checkQuickSound(t, s, m, filepath.Base(f)+" mutation "+string(rune('a'+mi))); !valid {
					rejected++
				}
			}
		}
	}
	if rejected < 500 {
		t.Fatalf("only %d of %d mutations rejected by jsonschema: the test does not exercise the walk", rejected, tried)
	}
	t.Logf("%d mutated resources, %d rejected by jsonschema", tried, rejected)
}

// mutateAt returns a copy of v with the target-th eligible value (in a
// deterministic order) replaced by mutate; false when there are fewer.
func mutateAt(v any, mutate func(any) (any, bool), target int, n *int) (any, bool) {
	if r, ok := mutate(v); ok {
		if *n == target {
			*n++
			return r, true
		}
		*n++
	}
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if c, done := mutateAt(x[k], mutate, target, n); done {
				cp := make(map[string]any, len(x))
				for kk, vv := range x {
					cp[kk] = vv
				}
				cp[k] = c
				return cp, true
			}
		}
	case []any:
		for i := range x {
			if c, done := mutateAt(x[i], mutate, target, n); done {
				cp := append([]any(nil), x...)
				cp[i] = c
				return cp, true
			}
		}
	}
	return nil, false
}

// FuzzQuickSchema: go test -run '^$' -fuzz=FuzzQuickSchema ./conformance
func FuzzQuickSchema(f *testing.F) {
	for _, pattern := range []string{"testdata/valid/*.json", "testdata/broken/*.json", "testdata/examples/Observation-*.json"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			f.Add(readFile(f, file))
		}
	}
	s, err := newSchemaSet()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		obj, _, _ := decodeStrict(body, DefaultMaxDepth)
		var list []map[string]any
		resourcesIn(obj, &list)
		for _, res := range list {
			checkQuickSound(t, s, res, strings.ToValidUTF8(string(body[:min(len(body), 60)]), "?"))
		}
	})
}
