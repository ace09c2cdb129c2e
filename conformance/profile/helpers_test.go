package profile

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

var testRegistry = sync.OnceValues(func() (*Registry, error) { return New() })

func registry(t testing.TB) *Registry {
	t.Helper()
	r, err := testRegistry()
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r
}

func load(t testing.TB, path string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := decode(raw)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

func errorsOf(issues []Issue) []Issue {
	var out []Issue
	for _, is := range issues {
		if is.Severity == "error" || is.Severity == "fatal" {
			out = append(out, is)
		}
	}
	return out
}

func issuesText(issues []Issue) string {
	var b strings.Builder
	for _, is := range issues {
		b.WriteString("\n  " + is.Severity + " " + is.Code + " @" + is.Expression + ": " + is.Diagnostics)
	}
	return b.String()
}

// edit changes a resource at a dotted path with [i] indexes: value nil
// deletes, otherwise it sets (appending when the index is the array length).
func edit(t testing.TB, res map[string]any, path string, value any) {
	t.Helper()
	segs := strings.Split(path, ".")
	var cur any = res
	for i, seg := range segs {
		name, idx := seg, -1
		if j := strings.IndexByte(seg, '['); j >= 0 {
			name = seg[:j]
			n, err := strconv.Atoi(strings.TrimSuffix(seg[j+1:], "]"))
			if err != nil {
				t.Fatalf("bad path %s", path)
			}
			idx = n
		}
		m, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("path %s: %s is not an object", path, name)
		}
		last := i == len(segs)-1
		if idx < 0 {
			if last {
				if value == nil {
					delete(m, name)
				} else {
					m[name] = value
				}
				return
			}
			cur = m[name]
			continue
		}
		list, _ := m[name].([]any)
		if last {
			switch {
			case value == nil:
				m[name] = append(list[:idx:idx], list[idx+1:]...)
			case idx == len(list):
				m[name] = append(list, value)
			default:
				list[idx] = value
			}
			return
		}
		cur = list[idx]
	}
}

// js decodes a JSON literal the way resources are decoded (UseNumber).
func js(t testing.TB, s string) any {
	t.Helper()
	m, err := decode([]byte(`{"v":` + s + `}`))
	if err != nil {
		t.Fatalf("bad JSON literal %s: %v", s, err)
	}
	return m["v"]
}

func validFixtures(t testing.TB) map[string]map[string]any {
	files, _ := filepath.Glob("testdata/valid/*.json")
	out := map[string]map[string]any{}
	for _, f := range files {
		out[strings.TrimSuffix(filepath.Base(f), ".json")] = load(t, f)
	}
	return out
}

func copyRes(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	out, _ := decode(b)
	return out
}

var bg = context.Background()
