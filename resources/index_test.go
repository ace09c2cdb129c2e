package resources

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

const observationJSON = `{
  "resourceType": "Observation", "id": "hr1", "status": "final",
  "meta": {"lastUpdated": "2024-05-01T10:00:00Z", "tag": [{"system": "http://example.org/tags", "code": "rpm"}]},
  "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
  "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}], "text": "Heart rate"},
  "subject": {"reference": "Patient/p1"},
  "encounter": {"reference": "Encounter/e1"},
  "effectiveDateTime": "2013-01-14T10:00:00Z",
  "valueQuantity": {"value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}
}`

const bloodPressureJSON = `{
  "resourceType": "Observation", "id": "bp1", "status": "final",
  "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
  "subject": {"reference": "Patient/p2"},
  "effectivePeriod": {"start": "2013-01-10", "end": "2013-01-20"},
  "component": [
    {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": {"value": 107, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
    {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}, "valueQuantity": {"value": 60, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
  ]
}`

const patientJSON = `{
  "resourceType": "Patient", "id": "p1", "active": true, "gender": "female", "birthDate": "1974-12-25",
  "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}, "system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
  "name": [{"family": "Dupont", "given": ["Évelyne", "Marie"]}],
  "telecom": [{"system": "phone", "value": "(03) 5555 6473"}],
  "address": [{"line": ["534 Erewhon St"], "city": "PleasantVille", "postalCode": "3999"}],
  "generalPractitioner": [{"reference": "https://fhir.example.org/r4/Practitioner/dr1"}],
  "managingOrganization": {"reference": "Organization/1"}
}`

// has reports whether entries hold one equal to want on the fields set in want.
func has(entries []storage.Entry, want storage.Entry) bool {
	for _, e := range entries {
		if e.Param == want.Param && e.Kind == want.Kind && e.System == want.System && e.Code == want.Code &&
			e.RefType == want.RefType && e.RefID == want.RefID && e.RefURL == want.RefURL &&
			(want.Text == "" || e.Text == want.Text) && (want.Exact == "" || e.Exact == want.Exact) &&
			(want.Low == 0 || e.Low == want.Low) && (want.High == 0 || e.High == want.High) &&
			(want.Num == 0 || near(e.Num, want.Num)) {
			return true
		}
	}
	return false
}

func index(t testing.TB, r *Registry, src string) []storage.Entry {
	t.Helper()
	res := decode(t, src)
	entries, err := r.Index(res["resourceType"].(string), res)
	if err != nil {
		t.Fatalf("Index: %v", err)
	}
	return entries
}

func TestIndexObservationAndPatient(t *testing.T) {
	r := registry(t)
	obs := index(t, r, observationJSON)
	pat := index(t, r, patientJSON)
	tests := []struct {
		name    string
		entries []storage.Entry
		want    storage.Entry
	}{
		{"obs code", obs, storage.Entry{Param: "code", Kind: storage.KindToken, System: "http://loinc.org", Code: "8867-4", Text: "heart rate"}},
		{"obs subject", obs, storage.Entry{Param: "subject", Kind: storage.KindReference, RefType: "Patient", RefID: "p1"}},
		{"obs patient", obs, storage.Entry{Param: "patient", Kind: storage.KindReference, RefType: "Patient", RefID: "p1"}},
		{"obs date", obs, storage.Entry{Param: "date", Kind: storage.KindDate, Low: ms("2013-01-14T10:00:00Z"), High: ms("2013-01-14T10:00:00.999Z")}},
		{"obs value-quantity", obs, storage.Entry{Param: "value-quantity", Kind: storage.KindQuantity, System: ucumSystem, Code: "/min", Num: 72}},
		{"obs category", obs, storage.Entry{Param: "category", Kind: storage.KindToken, System: "http://terminology.hl7.org/CodeSystem/observation-category", Code: "vital-signs"}},
		{"obs _id", obs, storage.Entry{Param: "_id", Kind: storage.KindToken, Code: "hr1"}},
		{"obs _tag", obs, storage.Entry{Param: "_tag", Kind: storage.KindToken, System: "http://example.org/tags", Code: "rpm"}},
		{"obs _lastUpdated", obs, storage.Entry{Param: "_lastUpdated", Kind: storage.KindDate, Low: ms("2024-05-01T10:00:00Z")}},
		{"obs status", obs, storage.Entry{Param: "status", Kind: storage.KindToken, Code: "final"}},
		{"pat name", pat, storage.Entry{Param: "name", Kind: storage.KindString, Text: "evelyne", Exact: "Évelyne"}},
		{"pat family", pat, storage.Entry{Param: "family", Kind: storage.KindString, Text: "dupont"}},
		{"pat birthdate", pat, storage.Entry{Param: "birthdate", Kind: storage.KindDate, Low: ms("1974-12-25T00:00:00Z"), High: ms("1974-12-26T00:00:00Z") - 1}},
		{"pat identifier", pat, storage.Entry{Param: "identifier", Kind: storage.KindToken, System: "urn:oid:1.2.36.146.595.217.0.1", Code: "12345"}},
		{"pat identifier of-type", pat, storage.Entry{Param: "identifier:of-type", Kind: storage.KindToken, System: "http://terminology.hl7.org/CodeSystem/v2-0203", Code: "MR|12345"}},
		{"pat gender", pat, storage.Entry{Param: "gender", Kind: storage.KindToken, Code: "female"}},
		{"pat active", pat, storage.Entry{Param: "active", Kind: storage.KindToken, Code: "true"}},
		{"pat phone", pat, storage.Entry{Param: "phone", Kind: storage.KindToken, Code: "(03) 5555 6473"}},
		{"pat address-city", pat, storage.Entry{Param: "address-city", Kind: storage.KindString, Text: "pleasantville"}},
		{"pat general-practitioner", pat, storage.Entry{Param: "general-practitioner", Kind: storage.KindReference, RefType: "Practitioner", RefID: "dr1"}},
	}
	for _, tt := range tests {
		if !has(tt.entries, tt.want) {
			t.Errorf("%s: no entry like %+v", tt.name, tt.want)
		}
	}
	// A Patient reference is not a Group: the resolve() filter must hold.
	grp := index(t, r, strings.Replace(observationJSON, "Patient/p1", "Group/g1", 1))
	for _, e := range grp {
		if e.Param == "patient" {
			t.Errorf("Observation about a Group indexed patient %+v", e)
		}
	}
	if _, err := r.Index("Patient", decode(t, observationJSON)); err == nil {
		t.Error("Index accepted a resource of the wrong type")
	}
	if _, err := r.Index("Patient", nil); err == nil {
		t.Error("Index accepted nil")
	}
}

func TestIndexComposite(t *testing.T) {
	r := registry(t)
	bp := index(t, r, bloodPressureJSON)
	var n int
	for _, e := range bp {
		if e.Param == "component-code-value-quantity" {
			n++
			if len(e.Parts) != 2 || e.Parts[0].Kind != storage.KindToken || e.Parts[1].Kind != storage.KindQuantity {
				t.Errorf("composite entry %+v", e)
			}
		}
	}
	if n < 2 {
		t.Errorf("component-code-value-quantity has %d entries", n)
	}
}

// TestRoundTrip indexes a few resources and checks that compiled queries
// select exactly the ones they should.
func TestRoundTrip(t *testing.T) {
	r := registry(t)
	docs := map[string][]storage.Entry{
		"hr1": index(t, r, observationJSON),
		"bp1": index(t, r, bloodPressureJSON),
	}
	tests := []struct {
		code, mod, value string
		want             []string
	}{
		{"code", "", "http://loinc.org|8867-4", []string{"hr1"}},
		{"code", "", "8867-4,85354-9", []string{"bp1", "hr1"}},
		{"code", "text", "heart", []string{"hr1"}},
		{"code", "not", "8867-4", []string{"bp1"}},
		{"subject", "", "Patient/p1", []string{"hr1"}},
		{"patient", "", "p2", []string{"bp1"}},
		{"subject", "Patient", "p2", []string{"bp1"}},
		{"date", "", "2013-01-14", []string{"hr1"}},
		{"date", "", "gt2013-01-14", []string{"bp1"}},
		{"date", "", "eq2013-01", []string{"bp1", "hr1"}},
		{"date", "", "sa2013-01-20", nil},
		{"value-quantity", "", "72", []string{"hr1"}},
		{"value-quantity", "", "gt70|http://unitsofmeasure.org|/min", []string{"hr1"}},
		{"value-quantity", "", "1.2|http://unitsofmeasure.org|/s", []string{"hr1"}},
		{"component-code-value-quantity", "", "http://loinc.org|8480-6$gt100", []string{"bp1"}},
		{"component-code-value-quantity", "", "http://loinc.org|8480-6$lt100", nil},
		{"component-code-value-quantity", "", "http://loinc.org|8462-4$lt100|http://unitsofmeasure.org|mm[Hg]", []string{"bp1"}},
		// Systolic 107 mm[Hg] is 14265.5 Pa: a unitless value compares with
		// 107 as written, never with the pascals.
		{"component-code-value-quantity", "", "http://loinc.org|8480-6$gt110", nil},
		{"component-code-value-quantity", "", "http://loinc.org|8480-6$lt14.3|http://unitsofmeasure.org|kPa", []string{"bp1"}},
		{"component-code-value-quantity", "", "http://loinc.org|8480-6$lt14.2|http://unitsofmeasure.org|kPa", nil},
		{"component-code-value-quantity", "", "http://loinc.org|8480-6$gt14.2|http://unitsofmeasure.org|kPa", []string{"bp1"}},
		{"component-code-value-quantity", "", "http://loinc.org|8480-6$107||mm[Hg]", []string{"bp1"}},
		{"component-code-value-quantity", "", "http://loinc.org|8480-6$107||mmHg", nil},
		// Alternatives mix: one in a convertible unit, one unitless.
		{"value-quantity", "", "5|http://unitsofmeasure.org|/min,72", []string{"hr1"}},
		{"value-quantity", "", "1.2|http://unitsofmeasure.org|/s,5", []string{"hr1"}},
		{"value-quantity", "", "5|http://unitsofmeasure.org|/min,5", nil},
		{"code-value-quantity", "", "8867-4$72", []string{"hr1"}},
		{"encounter", "missing", "true", []string{"bp1"}},
		{"encounter", "missing", "false", []string{"hr1"}},
		{"_id", "", "hr1,zz", []string{"hr1"}},
		{"_tag", "", "http://example.org/tags|rpm", []string{"hr1"}},
	}
	for _, tt := range tests {
		e := compileOne(t, r, "Observation", tt.code, tt.mod, tt.value)
		var got []string
		for _, id := range []string{"bp1", "hr1"} {
			ok, err := storage.Matches(e, id, docs[id])
			if err != nil {
				t.Fatalf("Matches(%s): %v", e, err)
			}
			if ok {
				got = append(got, id)
			}
		}
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("%s:%s=%s matched %v, want %v (%s)", tt.code, tt.mod, tt.value, got, tt.want, e)
		}
	}
}

func decodeFile(t testing.TB, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// TestIndexExamples indexes every official R4 example and one Synthea
// patient's bundle without error.
func TestIndexExamples(t *testing.T) {
	r := registry(t)
	files, err := filepath.Glob("testdata/r4-examples/*.json")
	if err != nil || len(files) < 200 {
		t.Fatalf("examples: %d files, %v", len(files), err)
	}
	var resources []map[string]any
	for _, f := range files {
		resources = append(resources, decodeFile(t, f))
	}
	bundles, _ := filepath.Glob("testdata/synthea/*.json")
	if len(bundles) != 1 {
		t.Fatalf("synthea bundles: %v", bundles)
	}
	bundle := decodeFile(t, bundles[0])
	entries, _ := bundle["entry"].([]any)
	for _, e := range entries {
		res, _ := e.(map[string]any)["resource"].(map[string]any)
		resources = append(resources, res)
	}
	total := 0
	byID := map[string][]storage.Entry{}
	for _, res := range resources {
		typ, _ := res["resourceType"].(string)
		got, err := r.Index(typ, res)
		if err != nil {
			t.Errorf("Index %s/%v: %v", typ, res["id"], err)
			continue
		}
		total += len(got)
		id, _ := res["id"].(string)
		byID[typ+"/"+id] = got
	}
	t.Logf("%d resources, %d entries", len(resources), total)

	// Spot checks on known examples.
	checks := []struct {
		key  string
		want storage.Entry
	}{
		{"Observation/example", storage.Entry{Param: "code", Kind: storage.KindToken, System: "http://loinc.org", Code: "29463-7"}},
		{"Observation/example", storage.Entry{Param: "subject", Kind: storage.KindReference, RefType: "Patient", RefID: "example"}},
		{"Observation/example", storage.Entry{Param: "value-quantity", Kind: storage.KindQuantity, System: ucumSystem, Code: "[lb_av]", Num: 185}},
		{"Observation/example", storage.Entry{Param: "value-quantity:canonical", Kind: storage.KindQuantity, System: ucumSystem, Code: "g", Num: 185 * 453.59237}},
		{"Observation/example", storage.Entry{Param: "date", Kind: storage.KindDate, Low: ms("2016-03-28T00:00:00Z"), High: ms("2016-03-29T00:00:00Z") - 1}},
		{"Patient/example", storage.Entry{Param: "family", Kind: storage.KindString, Exact: "Chalmers"}},
		{"Patient/example", storage.Entry{Param: "birthdate", Kind: storage.KindDate, Low: ms("1974-12-25T00:00:00Z")}},
		{"Patient/example", storage.Entry{Param: "identifier", Kind: storage.KindToken, System: "urn:oid:1.2.36.146.595.217.0.1", Code: "12345"}},
		{"Patient/e2d08f86-4813-4f3a-971f-87c09e0ec0c7", storage.Entry{Param: "family", Kind: storage.KindString, Text: "dach"}},
	}
	for _, c := range checks {
		if !has(byID[c.key], c.want) {
			t.Errorf("%s: no entry like %+v", c.key, c.want)
		}
	}
	// Synthea references are urn:uuid: they are kept as URLs (the
	// transaction layer rewrites them before indexing real writes).
	var urn bool
	for k, es := range byID {
		if strings.HasPrefix(k, "Observation/") {
			for _, e := range es {
				if e.Param == "subject" && strings.HasPrefix(e.RefURL, "urn:uuid:") {
					urn = true
				}
			}
		}
	}
	if !urn {
		t.Error("no Synthea Observation subject indexed as urn:uuid")
	}
}

// TestIndexParams: the restricted index is exactly the full index's
// entries of the named parameters, and nothing for no parameters.
func TestIndexParams(t *testing.T) {
	r := registry(t)
	for _, src := range []string{observationJSON, patientJSON} {
		res := decode(t, src)
		typ := res["resourceType"].(string)
		full, err := r.Index(typ, res)
		if err != nil {
			t.Fatal(err)
		}
		for _, codes := range [][]string{{"subject", "date"}, {"name", "_lastUpdated", "no-such"}, {}} {
			got, err := r.IndexParams(typ, res, codes)
			if err != nil {
				t.Fatal(err)
			}
			var want []storage.Entry
			for _, e := range full {
				if slices.Contains(codes, e.Param) {
					want = append(want, e)
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s %v:\n got %+v\nwant %+v", typ, codes, got, want)
			}
		}
	}
	if _, err := r.IndexParams("Patient", decode(t, observationJSON), nil); err == nil {
		t.Error("IndexParams accepted a resource of the wrong type")
	}
}
