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

// checkCases validates each instance against a profile and expects either
// no error (want "") or an error whose text contains want.
func checkCases(t *testing.T, r *Registry, profile string, cases []struct{ name, json, want string }) {
	t.Helper()
	for _, tc := range cases {
		res, err := decode([]byte(tc.json))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		errs := errorsOf(r.Validate(bg, res, Options{Profiles: []string{profile}}))
		text := issuesText(errs)
		switch {
		case tc.want == "" && len(errs) > 0:
			t.Errorf("%s: unexpected:%s", tc.name, text)
		case tc.want != "" && !strings.Contains(text, tc.want):
			t.Errorf("%s: want %q, got:%s", tc.name, tc.want, text)
		}
	}
}

func addProfile(t *testing.T, r *Registry, url, typ string, elems ...map[string]any) {
	t.Helper()
	diff := make([]any, len(elems))
	for i, e := range elems {
		diff[i] = e
	}
	sd := map[string]any{
		"resourceType": "StructureDefinition", "url": url, "name": "Test", "status": "active", "kind": "resource",
		"abstract": false, "type": typ, "baseDefinition": "http://hl7.org/fhir/StructureDefinition/" + typ, "derivation": "constraint",
		"differential": map[string]any{"element": diff},
	}
	if _, err := r.Add(bg, sd); err != nil {
		t.Fatalf("Add %s: %v", url, err)
	}
}

func el(id string, kv ...any) map[string]any {
	path := id
	for strings.Contains(path, ":") {
		i := strings.IndexByte(path, ':')
		j := strings.IndexByte(path[i:], '.')
		if j < 0 {
			path = path[:i]
		} else {
			path = path[:i] + path[i+j:]
		}
	}
	m := map[string]any{"id": id, "path": path}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

// TestReslicing: a slice that is itself sliced (profiling.html#reslicing).
// The identifiers of the hospital's MRN system are a slice; among them one
// official and any number of old ones, closed to other uses. A reslice
// inherits the rules of the slice it refines (the MRN's value is required).
func TestReslicing(t *testing.T) {
	r, err := New()
	if err != nil {
		t.Fatal(err)
	}
	const url = "http://example.org/fhir/StructureDefinition/resliced"
	bySystem := map[string]any{"discriminator": []any{map[string]any{"type": "value", "path": "system"}}, "rules": "open"}
	byUse := map[string]any{"discriminator": []any{map[string]any{"type": "value", "path": "use"}}, "rules": "closed"}
	addProfile(t, r, url, "Patient",
		el("Patient.identifier", "slicing", bySystem),
		el("Patient.identifier:mrn", "sliceName", "mrn", "min", json1(1), "max", "*", "slicing", byUse),
		el("Patient.identifier:mrn.system", "min", json1(1), "fixedUri", "http://hospital.example/mrn"),
		el("Patient.identifier:mrn.value", "min", json1(1)),
		el("Patient.identifier:mrn/official", "sliceName", "mrn/official", "min", json1(1), "max", "1"),
		el("Patient.identifier:mrn/official.use", "min", json1(1), "fixedCode", "official"),
		el("Patient.identifier:mrn/old", "sliceName", "mrn/old", "max", "*"),
		el("Patient.identifier:mrn/old.use", "min", json1(1), "fixedCode", "old"),
	)
	mrn := func(use, value string) string {
		s := `{"system":"http://hospital.example/mrn","use":"` + use + `"`
		if value != "" {
			s += `,"value":"` + value + `"`
		}
		return s + "}"
	}
	other := `{"system":"http://other.example","use":"usual","value":"9"}`
	pat := func(ids ...string) string {
		return `{"resourceType":"Patient","identifier":[` + strings.Join(ids, ",") + `]}`
	}
	checkCases(t, r, url, []struct{ name, json, want string }{
		{"one official", pat(mrn("official", "1")), ""},
		{"official, old ones and another system", pat(mrn("old", "0"), mrn("official", "1"), other, mrn("old", "00")), ""},
		{"only an old one", pat(mrn("old", "0")), "slice mrn/official, cardinality 1..1"},
		{"two official", pat(mrn("official", "1"), mrn("official", "2")), "slice mrn/official, cardinality 1..1"},
		{"a usual MRN: closed reslicing", pat(mrn("official", "1"), mrn("usual", "2")), "closed slicing of Patient.identifier"},
		{"no MRN at all", pat(other), "slice mrn, cardinality 1..*"},
		{"no MRN: the required reslice too", pat(other), "slice mrn/official, cardinality 1..1"},
		{"the reslice inherits the slice's required value", pat(mrn("official", "")), "Patient.identifier[0].value"},
	})
	sd, err := r.Definition(bg, url)
	if err != nil {
		t.Fatal(err)
	}
	// The snapshot lists the reslices after their slice, ids as R4 writes them.
	var ids []string
	for _, e := range sd.JSON["snapshot"].(map[string]any)["element"].([]any) {
		if id := e.(map[string]any)["id"].(string); strings.HasPrefix(id, "Patient.identifier:") && strings.Count(id, ".") == 1 {
			ids = append(ids, id)
		}
	}
	if got := strings.Join(ids, " "); got != "Patient.identifier:mrn Patient.identifier:mrn/official Patient.identifier:mrn/old" {
		t.Errorf("slice order in the snapshot: %s", got)
	}
}

// TestExistsDiscriminator: components told apart by whether they carry a
// value (slice "answered", value[x] 1..1) or not ("unanswered", value[x]
// 0..0, which then needs a dataAbsentReason), closed.
func TestExistsDiscriminator(t *testing.T) {
	r, err := New()
	if err != nil {
		t.Fatal(err)
	}
	const url = "http://example.org/fhir/StructureDefinition/exists-sliced"
	byValue := map[string]any{"discriminator": []any{map[string]any{"type": "exists", "path": "value"}}, "rules": "closed"}
	addProfile(t, r, url, "Observation",
		el("Observation.component", "slicing", byValue),
		el("Observation.component:answered", "sliceName", "answered", "min", json1(1), "max", "1"),
		el("Observation.component:answered.value[x]", "min", json1(1)),
		el("Observation.component:unanswered", "sliceName", "unanswered", "max", "*"),
		el("Observation.component:unanswered.value[x]", "max", "0"),
		el("Observation.component:unanswered.dataAbsentReason", "min", json1(1)),
	)
	comp := func(rest string) string { return `{"code":{"text":"q"}` + rest + `}` }
	answered := comp(`,"valueInteger":3`)
	asked := comp(`,"dataAbsentReason":{"text":"asked but unknown"}`)
	bare := comp("")
	obs := func(cs ...string) string {
		return `{"resourceType":"Observation","status":"final","code":{"text":"panel"},"component":[` + strings.Join(cs, ",") + `]}`
	}
	checkCases(t, r, url, []struct{ name, json, want string }{
		{"one answered", obs(answered), ""},
		{"answered and unanswered ones", obs(asked, answered, asked), ""},
		{"two answered", obs(answered, answered), "slice answered, cardinality 1..1"},
		{"none answered", obs(asked), "slice answered, cardinality 1..1"},
		{"unanswered without a reason", obs(answered, bare), "Observation.component[1].dataAbsentReason"},
	})
}
