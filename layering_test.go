// Package anodyne_test holds the repository-wide layering test: the
// direction of dependencies DEVELOPERS.md draws, checked on the real
// import graph.
package anodyne_test

import (
	"bufio"
	"errors"
	"fmt"
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// layers says, per package pattern, which of the module's packages its
// non-test files may import ("x/..." is x and everything below it, "*"
// anything). The most specific pattern that matches a package is its rule;
// a package no pattern matches fails the test, so a new package has to be
// placed here. The table is DEVELOPERS.md's map: storage knows nothing of
// FHIR, resources and conformance sit below fhir, FHIRPath (a language of
// the specification, conformance/fhirpath) below everything that evaluates
// it, and only cmd, bench and the test harness pick a concrete backend.
var layers = map[string][]string{
	"conformance/fhirpath/...": {},
	"conformance":              {},
	"conformance/profile/...":  {"conformance", "conformance/fhirpath"},
	"storage/...":              {"storage"},
	"storage/mongo/mongotest":  {},
	"resources/...":            {"conformance/fhirpath", "storage"},
	"auth":                     {"storage"},
	"auth/...":                 {"auth", "storage"},
	"auth/audit":               {"auth", "resources", "storage"},
	"deid":                     {"conformance/fhirpath"},
	"clinical/opioid":          {},
	"metrics":                  {"storage"},
	"tracing":                  {"storage"},
	"fhir":                     {"auth", "conformance/...", "resources", "storage", "storage/lease"},
	"fhir/fhirtest":            {"auth/...", "conformance/...", "fhir", "resources", "storage/..."},
	"research":                 {"auth", "conformance/...", "deid", "fhir", "resources", "storage"},
	"subscription":             {"auth", "conformance/...", "fhir", "storage"},
	"clinical/opioidsafety":    {"clinical/opioid", "fhir", "storage"},
	"clinical/rpm":             {"fhir", "storage"},
	"clinical/cdshooks":        {"auth", "clinical/opioid", "fhir", "storage"},
	"demo":                     {"fhir", "storage"},
	"apps/...":                 {"auth/smart"},
	"bench/...":                {"*"},
	"cmd/...":                  {"*"},
}

// testOnly are packages for tests: no non-test file imports them but the
// harnesses themselves.
var testOnly = []string{"fhir/fhirtest", "storage/storagetest", "storage/mongo/mongotest"}

func matches(pattern, pkg string) bool {
	if pattern == "*" {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	return pkg == pattern
}

// ruleFor is the most specific pattern of rules that matches pkg.
func ruleFor(rules map[string][]string, pkg string) (string, bool) {
	best, found := "", false
	for p := range rules {
		if !matches(p, pkg) {
			continue
		}
		// An exact pattern beats a tree; a longer tree beats a shorter.
		spec := func(p string) int {
			n := 2 * len(strings.TrimSuffix(p, "/..."))
			if !strings.HasSuffix(p, "/...") {
				n++
			}
			return n
		}
		if !found || spec(p) > spec(best) {
			best, found = p, true
		}
	}
	return best, found
}

// violations lists the edges of graph (package -> the module packages it
// imports, module-relative) that the rules forbid.
func violations(graph map[string][]string, rules map[string][]string, testOnly []string) []string {
	var out []string
	for pkg, imports := range graph {
		rule, ok := ruleFor(rules, pkg)
		if !ok {
			out = append(out, fmt.Sprintf("%s: no layering rule (add it to layers, as DEVELOPERS.md places it)", pkg))
			continue
		}
		for _, imp := range imports {
			if slices.Contains(testOnly, imp) && !slices.Contains(testOnly, pkg) {
				out = append(out, fmt.Sprintf("%s imports %s, a package for tests only", pkg, imp))
				continue
			}
			if !slices.ContainsFunc(rules[rule], func(a string) bool { return matches(a, imp) }) {
				out = append(out, fmt.Sprintf("%s imports %s: %q may import only %v", pkg, imp, rule, rules[rule]))
			}
		}
	}
	sort.Strings(out)
	return out
}

func TestLayeringRules(t *testing.T) {
	tests := []struct {
		name  string
		graph map[string][]string
		want  int
	}{
		{"the map itself", map[string][]string{"fhir": {"storage", "resources"}, "resources": {"storage", "conformance/fhirpath"}}, 0},
		{"storage importing fhir", map[string][]string{"storage/sqlite": {"storage", "fhir"}}, 1},
		{"resources importing fhir", map[string][]string{"resources": {"fhir"}}, 1},
		{"resources importing a sub-package of fhir", map[string][]string{"resources": {"fhir/fhirtest"}}, 1},
		{"fhirpath importing anything", map[string][]string{"conformance/fhirpath": {"storage"}}, 1},
		{"fhir choosing a backend", map[string][]string{"fhir": {"storage/sqlite"}}, 1},
		{"the harness choosing one", map[string][]string{"fhir/fhirtest": {"storage/sqlite", "storage/mongo/mongotest"}}, 0},
		{"cmd importing a test harness", map[string][]string{"cmd/anodyne": {"storage/storagetest"}}, 1},
		{"an unplaced package", map[string][]string{"utils": {}}, 1},
		{"storage/mongo/mongotest below storage/...", map[string][]string{"storage/mongo/mongotest": {"storage"}}, 1},
	}
	for _, tt := range tests {
		if got := violations(tt.graph, layers, testOnly); len(got) != tt.want {
			t.Errorf("%s: %d violations %v, want %d", tt.name, len(got), got, tt.want)
		}
	}
}

// TestLayering checks the module's real import graph (non-test files, the
// default build context) against layers, and that no production package
// but the test harnesses imports net/http/httptest.
func TestLayering(t *testing.T) {
	module, err := modulePath("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	graph := map[string][]string{}
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "node_modules" || name == "vendor") {
			return filepath.SkipDir
		}
		if path == "." {
			return nil
		}
		p, err := build.Default.ImportDir(path, 0)
		var noGo *build.NoGoError
		if errors.As(err, &noGo) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		pkg := filepath.ToSlash(path)
		// No request is replayed through a router in production code:
		// batch entries and imports call the interactions directly.
		if slices.Contains(p.Imports, "net/http/httptest") && !slices.Contains(testOnly, pkg) {
			t.Errorf("%s imports net/http/httptest outside its tests", pkg)
		}
		var imports []string
		for _, imp := range p.Imports {
			if rel, ok := strings.CutPrefix(imp, module+"/"); ok {
				imports = append(imports, rel)
			}
		}
		graph[pkg] = imports
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"fhir", "storage", "resources", "conformance/fhirpath"} {
		if _, ok := graph[want]; !ok {
			t.Fatalf("package %s not found: the walk is wrong", want)
		}
	}
	for _, v := range violations(graph, layers, testOnly) {
		t.Error(v)
	}
}

// modulePath reads the module line of go.mod.
func modulePath(gomod string) (string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return "", fmt.Errorf("reading the module path: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.TrimSpace(m), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading %s: %w", gomod, err)
	}
	return "", fmt.Errorf("%s has no module line", gomod)
}
