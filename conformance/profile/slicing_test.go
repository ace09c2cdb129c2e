package profile

import (
	"strings"
	"testing"
)

// TestSlicingRules: ordered and openAtEnd slicing, a value discriminator on
// a nested path and an exists discriminator, with a user profile.
func TestSlicingRules(t *testing.T) {
	r, err := New()
	if err != nil {
		t.Fatal(err)
	}
	mk := func(url, rules string, ordered bool, disc string) {
		t.Helper()
		sd := map[string]any{
			"resourceType": "StructureDefinition", "url": url, "name": "Sliced", "status": "active", "kind": "resource",
			"abstract": false, "type": "Patient", "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient", "derivation": "constraint",
			"differential": map[string]any{"element": []any{
				map[string]any{"id": "Patient.identifier", "path": "Patient.identifier", "slicing": map[string]any{
					"discriminator": []any{map[string]any{"type": disc, "path": "system"}}, "rules": rules, "ordered": ordered}},
				map[string]any{"id": "Patient.identifier:mrn", "path": "Patient.identifier", "sliceName": "mrn", "min": json1(1), "max": "1"},
				map[string]any{"id": "Patient.identifier:mrn.system", "path": "Patient.identifier.system", "min": json1(1), "fixedUri": "http://hospital.example/mrn"},
				map[string]any{"id": "Patient.identifier:ssn", "path": "Patient.identifier", "sliceName": "ssn", "max": "1"},
				map[string]any{"id": "Patient.identifier:ssn.system", "path": "Patient.identifier.system", "min": json1(1), "fixedUri": "http://hl7.org/fhir/sid/us-ssn"},
			}},
		}
		if _, err := r.Add(bg, sd); err != nil {
			t.Fatal(err)
		}
	}
	base := "http://example.org/fhir/StructureDefinition/"
	mk(base+"ordered", "open", true, "value")
	mk(base+"at-end", "openAtEnd", false, "value")
	mk(base+"closed", "closed", false, "pattern")
	id := func(system string) string { return `{"system":"` + system + `","value":"1"}` }
	mrn, ssn, other := id("http://hospital.example/mrn"), id("http://hl7.org/fhir/sid/us-ssn"), id("http://other.example")
	cases := []struct {
		profile, ids, want string // want "" = valid
	}{
		{"ordered", mrn + "," + ssn + "," + other, ""},
		{"ordered", ssn + "," + mrn, "the slices are ordered"},
		{"ordered", ssn, "slice mrn, cardinality 1..1"},
		{"ordered", mrn + "," + mrn, "slice mrn, cardinality 1..1"},
		{"at-end", mrn + "," + other, ""},
		{"at-end", other + "," + mrn, "openAtEnd"},
		{"closed", mrn + "," + ssn, ""},
		{"closed", mrn + "," + other, "matches none of the slices mrn, ssn"},
	}
	for _, tc := range cases {
		res, err := decode([]byte(`{"resourceType":"Patient","identifier":[` + tc.ids + `]}`))
		if err != nil {
			t.Fatal(err)
		}
		errs := errorsOf(r.Validate(bg, res, Options{Profiles: []string{base + tc.profile}}))
		text := issuesText(errs)
		switch {
		case tc.want == "" && len(errs) > 0:
			t.Errorf("%s %s: unexpected:%s", tc.profile, tc.ids, text)
		case tc.want != "" && !strings.Contains(text, tc.want):
			t.Errorf("%s %s: want %q, got:%s", tc.profile, tc.ids, tc.want, text)
		}
	}
}

func json1(n int) any { return jsonInt(n) }
