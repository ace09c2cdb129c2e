package fhir_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// TestCompileCriteria checks which standing criteria compile and, for
// those that do, that the compiled expression selects exactly the
// resources the criteria describe (judged by hand for each resource).
func TestCompileCriteria(t *testing.T) {
	b := backends()[0].open(t)
	_, srv := startServer(t, b, nil)
	_, reg := parts(t)

	pain := func(code string, value float64, patient string) map[string]any {
		return map[string]any{
			"resourceType": "Observation", "id": "o", "status": "final",
			"code":          map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": code}}},
			"subject":       map[string]any{"reference": "Patient/" + patient},
			"valueQuantity": map[string]any{"value": json.Number(jsonNum(value)), "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"},
		}
	}
	resources := map[string]map[string]any{
		"pain8-p1":  pain("72514-3", 8, "p1"),
		"pain3-p2":  pain("72514-3", 3, "p2"),
		"pulse-p1":  pain("8867-4", 95, "p1"),
		"flag-open": {"resourceType": "Flag", "id": "f", "status": "active", "code": map[string]any{"text": "x"}, "subject": map[string]any{"reference": "Patient/p1"}},
	}

	cases := []struct {
		criteria string
		typ      string
		match    []string // keys of resources that match; nil with badParam set
		badParam string   // the parameter a CriteriaError names ("" with bad: the whole string)
		bad      bool
	}{
		{criteria: "Observation?code=72514-3", typ: "Observation", match: []string{"pain8-p1", "pain3-p2"}},
		{criteria: "Observation?code=http://loinc.org|72514-3&value-quantity=ge7", typ: "Observation", match: []string{"pain8-p1"}},
		{criteria: "Observation?code=72514-3&subject=Patient/p2", typ: "Observation", match: []string{"pain3-p2"}},
		{criteria: "Observation?code=72514-3,8867-4&patient=p1", typ: "Observation", match: []string{"pain8-p1", "pulse-p1"}},
		{criteria: "Observation", typ: "Observation", match: []string{"pain8-p1", "pain3-p2", "pulse-p1"}},
		{criteria: "Flag?patient=p1", typ: "Flag", match: []string{"flag-open"}},
		{criteria: "Flag?patient=p2", typ: "Flag", match: []string{}},
		// R4 defines no status parameter on Flag; the server defines one
		// (resources/data/server-search-parameters.json): the example.
		{criteria: "Flag?status=active", typ: "Flag", match: []string{"flag-open"}},
		{criteria: "Flag?status=inactive", typ: "Flag", match: []string{}},
		{criteria: "Observation?nonsense=1", bad: true, badParam: "nonsense"},
		{criteria: "Observation?value-quantity=abc", bad: true, badParam: "value-quantity"},
		{criteria: "Observation?code=1&_sort=date", bad: true, badParam: "_sort"},
		{criteria: "Observation?_count=5", bad: true, badParam: "_count"},
		{criteria: "Observation?_include=Observation:subject", bad: true, badParam: "_include"},
		{criteria: "Observation?subject.name=x", bad: true, badParam: "subject.name"},
		{criteria: "Observation?subject:Patient.name=x", bad: true, badParam: "subject:Patient.name"},
		{criteria: "Patient?_has:Observation:patient:code=1", bad: true, badParam: "_has:Observation:patient:code"},
		{criteria: "NotAType?x=1", bad: true},
		{criteria: "", bad: true},
		{criteria: "Observation?code=%zz", bad: true},
	}
	for _, tc := range cases {
		t.Run(tc.criteria, func(t *testing.T) {
			typ, expr, err := srv.CompileCriteria(context.Background(), tc.criteria)
			if tc.bad {
				var ce *fhir.CriteriaError
				if !errors.As(err, &ce) {
					t.Fatalf("error %v, want a *CriteriaError", err)
				}
				if ce.Param != tc.badParam {
					t.Fatalf("CriteriaError names %q, want %q (%v)", ce.Param, tc.badParam, ce)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if typ != tc.typ {
				t.Fatalf("type %q, want %q", typ, tc.typ)
			}
			want := map[string]bool{}
			for _, k := range tc.match {
				want[k] = true
			}
			for key, res := range resources {
				rt := res["resourceType"].(string)
				if rt != typ {
					continue
				}
				entries, err := reg.Index(rt, res)
				if err != nil {
					t.Fatal(err)
				}
				got, err := storage.Matches(expr, res["id"].(string), entries)
				if err != nil {
					t.Fatal(err)
				}
				if got != want[key] {
					t.Errorf("%s: matches=%v, want %v", key, got, want[key])
				}
			}
		})
	}
}

func jsonNum(v float64) string {
	b, _ := json.Marshal(v)
	return string(b)
}
