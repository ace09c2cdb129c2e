package fhirpath

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func decodeFile(t testing.TB, path string) any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	return v
}

type searchParam struct {
	id, expr string
	bases    []string
}

func loadSearchParams(t testing.TB) []searchParam {
	t.Helper()
	bundle := decodeFile(t, filepath.Join("testdata", "search-parameters.json")).(map[string]any)
	var out []searchParam
	for _, e := range bundle["entry"].([]any) {
		r := e.(map[string]any)["resource"].(map[string]any)
		expr, _ := r["expression"].(string)
		if expr == "" {
			continue // _text, _content and friends have no FHIRPath
		}
		sp := searchParam{id: r["id"].(string), expr: expr}
		for _, b := range r["base"].([]any) {
			sp.bases = append(sp.bases, b.(string))
		}
		out = append(out, sp)
	}
	return out
}

func loadExamples(t testing.TB) map[string]any {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "examples", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	out := map[string]any{}
	for _, f := range files {
		out[filepath.Base(f)] = decodeFile(t, f)
	}
	return out
}

// TestSearchParameterExpressions parses every R4 search parameter
// expression and evaluates it against every example resource: none may
// fail, and parameters of the examples' own types must find values.
func TestSearchParameterExpressions(t *testing.T) {
	params := loadSearchParams(t)
	if len(params) < 1000 {
		t.Fatalf("only %d search parameters with expressions", len(params))
	}
	examples := loadExamples(t)
	names := make([]string, 0, len(examples))
	for n := range examples {
		names = append(names, n)
	}
	sort.Strings(names)
	found := map[string]int{} // example -> parameters of its type that matched
	for _, sp := range params {
		expr, err := Parse(sp.expr)
		if err != nil {
			t.Errorf("%s: %v", sp.id, err)
			continue
		}
		for _, name := range names {
			res := examples[name]
			out, err := expr.Evaluate(res)
			if err != nil {
				t.Errorf("%s on %s: %v", sp.id, name, err)
				continue
			}
			rt := res.(map[string]any)["resourceType"].(string)
			for _, n := range out {
				if n.Type() == "" {
					t.Errorf("%s on %s: untyped node %v", sp.id, name, n.Value())
				}
			}
			for _, b := range sp.bases {
				if (b == rt || b == "Resource" || b == "DomainResource") && len(out) > 0 {
					found[name]++
				}
			}
		}
	}
	for _, name := range names {
		if found[name] == 0 {
			t.Errorf("no search parameter of its type extracted anything from %s", name)
		}
	}
	t.Logf("%d expressions x %d examples evaluated; matches per example: %v", len(params), len(examples), found)
}

func TestSearchParameterTypes(t *testing.T) {
	examples := loadExamples(t)
	tests := []struct {
		example, expr string
		wantTypes     []string
	}{
		{"Observation-example.json", "Observation.code", []string{"CodeableConcept"}},
		{"Observation-example.json", "(Observation.value as Quantity)", []string{"Quantity"}},
		{"Observation-example.json", "Observation.subject.where(resolve() is Patient)", []string{"Reference"}},
		{"Observation-example.json", "Observation.effective", []string{"dateTime"}},
		{"Observation-example.json", "Observation.effective is dateTime", []string{TypeBoolean}},
		{"Observation-blood-pressure.json", "Observation.component.value.ofType(Quantity)", []string{"Quantity", "Quantity"}},
		{"Observation-blood-pressure.json", "Observation.component", []string{"Observation.component", "Observation.component"}},
		{"Patient-example.json", "Patient.birthDate", []string{"date"}},
		{"Patient-example.json", "Patient.name.given.first()", []string{"string"}},
		{"Patient-example.json", "Patient.gender", []string{"code"}},
		{"Patient-example.json", "Patient.deceased.exists() and Patient.deceased != false", []string{TypeBoolean}},
		{"Patient-example.json", "Resource.id", []string{"string"}},
		{"Questionnaire-f201.json", "Questionnaire.item.item.item.type", nil},
		{"Questionnaire-f201.json", "Questionnaire.item.item.type", []string{"code", "code", "code", "code", "code", "code"}},
		{"Condition-example.json", "Condition.subject.where(resolve() is Group)", nil},
		{"Encounter-example.json", "Encounter.subject.resolve()", []string{"Patient"}},
	}
	for _, tc := range tests {
		t.Run(tc.example+"/"+tc.expr, func(t *testing.T) {
			out, err := MustParse(tc.expr).Evaluate(examples[tc.example])
			if err != nil {
				t.Fatal(err)
			}
			got := make([]string, len(out))
			for i, n := range out {
				got[i] = n.Type()
			}
			if strings.Join(got, ",") != strings.Join(tc.wantTypes, ",") {
				t.Fatalf("types %v, want %v", got, tc.wantTypes)
			}
		})
	}
}
