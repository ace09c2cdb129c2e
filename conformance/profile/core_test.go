package profile

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/conformance/fhirpath"
)

// knownInvalidExamples are official R4 examples that break a rule of the
// specification itself (the README of the reference data lists the first
// two); each must still be found invalid, so that the list cannot hide a
// regression.
var knownInvalidExamples = map[string]string{
	"MedicationRequest-medrx0301.json":       "dispenseRequest.performer references a Practitioner; only Organization is allowed",
	"Observation-clinical-gender.json":       "performer references an Encounter",
	"DeviceMetric-example.json":              "parent references a DeviceDefinition; only Device is allowed",
	"Questionnaire-bb.json":                  "que-7: an enableWhen with operator exists and a non-boolean answer",
	"Questionnaire-qs1.json":                 "items without linkId",
	"Questionnaire-phq-9-questionnaire.json": "claims the cqf-questionnaire profile, which R4 core does not ship",
}

// TestOfficialExamples validates every official R4 example (all types,
// including every example of the profiled types Observation, Encounter,
// CarePlan and MedicationRequest) against the core definitions and the
// profiles they claim.
func TestOfficialExamples(t *testing.T) {
	r := registry(t)
	files, err := filepath.Glob("../testdata/examples/*.json")
	if err != nil || len(files) < 200 {
		t.Fatalf("examples: %d files, %v", len(files), err)
	}
	perType := map[string]int{}
	for _, f := range files {
		name := filepath.Base(f)
		res := load(t, f)
		perType[res["resourceType"].(string)]++
		errs := errorsOf(r.Validate(bg, res, Options{}))
		if why, known := knownInvalidExamples[name]; known {
			if len(errs) == 0 {
				t.Errorf("%s should be invalid (%s) but no error was found", name, why)
			}
			continue
		}
		if len(errs) > 0 {
			t.Errorf("%s:%s", name, issuesText(errs))
		}
	}
	for _, typ := range []string{"Observation", "Encounter", "CarePlan", "MedicationRequest"} {
		if perType[typ] < 5 {
			t.Errorf("only %d examples of %s", perType[typ], typ)
		}
	}
}

// vitalProfiles maps the LOINC code of a vital sign to its R4 profile
// (from the vital-signs table of the specification, not from the files).
var vitalProfiles = map[string]string{
	"85353-1": "vitalspanel", "9279-1": "resprate", "8867-4": "heartrate", "2708-6": "oxygensat",
	"59408-5": "oxygensat", "8310-5": "bodytemp", "8302-2": "bodyheight", "8306-3": "bodyheight",
	"9843-4": "headcircum", "29463-7": "bodyweight", "39156-5": "bmi", "85354-9": "bp",
}

// TestVitalSignsExamples validates the R4 vital-signs examples against the
// generic vital-signs profile and the profile of their code.
func TestVitalSignsExamples(t *testing.T) {
	r := registry(t)
	files, _ := filepath.Glob("../testdata/examples/Observation-*.json")
	checked := map[string]bool{}
	for _, f := range files {
		res := load(t, f)
		if !strings.Contains(jsonText(res["category"]), `"vital-signs"`) {
			continue
		}
		name := filepath.Base(f)
		var specific string
		for _, c := range res["code"].(map[string]any)["coding"].([]any) {
			if p, ok := vitalProfiles[c.(map[string]any)["code"].(string)]; ok {
				specific = p
			}
		}
		profiles := []string{"http://hl7.org/fhir/StructureDefinition/vitalsigns"}
		if specific != "" {
			profiles = append(profiles, "http://hl7.org/fhir/StructureDefinition/"+specific)
			checked[specific] = true
		}
		errs := errorsOf(r.Validate(bg, res, Options{Profiles: profiles}))
		if _, known := knownInvalidExamples[name]; known {
			continue
		}
		if name == "Observation-f202.json" {
			// Observation-f202 has the vital-signs category but does not
			// claim the profile, and rightly: it has no effective time.
			if !strings.Contains(issuesText(errs), "@Observation.effective") {
				t.Errorf("%s claims no vital-signs profile and should fail it for its missing effective time:%s", name, issuesText(errs))
			}
			continue
		}
		if len(errs) > 0 {
			t.Errorf("%s against %v:%s", name, profiles, issuesText(errs))
		}
	}
	for _, p := range []string{"bp", "heartrate", "resprate", "oxygensat", "bodytemp", "bodyweight"} {
		if !checked[p] {
			t.Errorf("no R4 example was checked against %s", p)
		}
	}
}

// TestVitalSignsBroken breaks the blood-pressure and heart-rate examples.
func TestVitalSignsBroken(t *testing.T) {
	r := registry(t)
	cases := []struct {
		file, profile, path, value, wantPath, wantRule string
	}{
		{"Observation-blood-pressure.json", "bp", "component[0]", "", "Observation.component", "slice SystolicBP"},
		{"Observation-blood-pressure.json", "bp", "component[1].valueQuantity.code", `"kPa"`, "Observation.component[1].valueQuantity.code", "fixed value fixedCode"},
		{"Observation-heart-rate.json", "heartrate", "valueQuantity.code", `"/h"`, "Observation.valueQuantity.code", "fixed value fixedCode"},
		{"Observation-heart-rate.json", "heartrate", "code.coding[0].code", `"8310-5"`, "Observation.code.coding", "slice HeartRateCode"},
		{"Observation-heart-rate.json", "vitalsigns", "category", "", "Observation.category", "slice VSCat"},
		{"Observation-heart-rate.json", "vitalsigns", "subject", "", "Observation.subject", "cardinality 1..1"},
		{"Observation-heart-rate.json", "vitalsigns", "valueQuantity.value", "", "Observation", "invariant vs-2"},
	}
	for _, tc := range cases {
		t.Run(tc.profile+"/"+tc.path, func(t *testing.T) {
			res := load(t, "../testdata/examples/"+tc.file)
			var v any
			if tc.value != "" {
				v = js(t, tc.value)
			}
			edit(t, res, tc.path, v)
			if tc.path == "valueQuantity.value" {
				delete(res, "valueQuantity")
			}
			url := "http://hl7.org/fhir/StructureDefinition/" + tc.profile
			issues := r.Validate(bg, res, Options{Profiles: []string{url}, IgnoreClaimed: true})
			for _, is := range errorsOf(issues) {
				if is.Expression == tc.wantPath && strings.Contains(is.Diagnostics, tc.wantRule) {
					return
				}
			}
			t.Errorf("no error at %s naming %q; got:%s", tc.wantPath, tc.wantRule, issuesText(issues))
		})
	}
}

// TestCoreInvariants breaks the core R4 invariants of resources and data
// types, with no profile claimed.
func TestCoreInvariants(t *testing.T) {
	r := registry(t)
	obs := `{"resourceType":"Observation","status":"final","code":{"text":"x"},"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}`
	cases := []struct {
		name, json, key, path, severity string
	}{
		{"ele-1 empty element", obs + `,"subject":{}}`, "ele-1", "Observation.subject", "error"},
		{"dom-2 nested contained", obs + `,"contained":[{"resourceType":"Patient","id":"p","contained":[{"resourceType":"Patient","id":"q"}]}],"subject":{"reference":"#p"}}`, "dom-2", "Observation", "error"},
		{"dom-3 unreferenced contained", obs + `,"contained":[{"resourceType":"Patient","id":"p"}]}`, "dom-3", "Observation", "error"},
		{"dom-4 contained with versionId", obs + `,"contained":[{"resourceType":"Patient","id":"p","meta":{"versionId":"1"}}],"subject":{"reference":"#p"}}`, "dom-4", "Observation", "error"},
		{"dom-5 contained with security", obs + `,"contained":[{"resourceType":"Patient","id":"p","meta":{"security":[{"code":"R"}]}}],"subject":{"reference":"#p"}}`, "dom-5", "Observation", "error"},
		{"dom-6 no narrative", `{"resourceType":"Observation","status":"final","code":{"text":"x"}}`, "dom-6", "Observation", "warning"},
		{"obs-6 dataAbsentReason with value", obs + `,"valueInteger":1,"dataAbsentReason":{"text":"x"}}`, "obs-6", "Observation", "error"},
		{"obs-7 component code repeats code", `{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"valueInteger":1,"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"valueInteger":2}]}`, "obs-7", "Observation", "error"},
		{"per-1 period ends before it starts", obs + `,"effectivePeriod":{"start":"2026-12-02","end":"2026-12-01"}}`, "per-1", "Observation.effectivePeriod", "error"},
		{"qty-3 code without system", obs + `,"valueQuantity":{"value":1,"code":"mg"}}`, "qty-3", "Observation.valueQuantity", "error"},
		{"rng-2 low above high", obs + `,"valueRange":{"low":{"value":5},"high":{"value":1}}}`, "rng-2", "Observation.valueRange", "error"},
		{"pat-1 contact without details", `{"resourceType":"Patient","contact":[{"gender":"male"}]}`, "pat-1", "Patient.contact[0]", "error"},
		{"ext-1 extension with value and extensions", `{"resourceType":"Patient","extension":[{"url":"http://x.org/e","valueString":"a","extension":[{"url":"b","valueString":"c"}]}]}`, "ext-1", "Patient.extension[0]", "error"},
		{"enc: required binding on status", `{"resourceType":"Encounter","status":"bogus","class":{"code":"AMB"}}`, "", "Encounter.status", "error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := decode([]byte(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			issues := r.Validate(bg, res, Options{})
			for _, is := range issues {
				rule := "invariant " + tc.key
				if tc.key == "" {
					rule = "binding http://hl7.org/fhir/ValueSet/encounter-status"
				}
				if is.Expression == tc.path && is.Severity == tc.severity && strings.Contains(is.Diagnostics, rule) {
					return
				}
			}
			t.Errorf("want %s %s at %s; got:%s", tc.severity, tc.key, tc.path, issuesText(issues))
		})
	}
}

// TestConformsTo: FHIRPath conformsTo() answers through the registry.
func TestConformsTo(t *testing.T) {
	r := registry(t)
	fx := validFixtures(t)
	expr, err := fhirpath.Parse("conformsTo('http://anodyne-fhir.org/fhir/StructureDefinition/anodyne-pain-score')")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"pain-score-integer": true, "peg": false, "capillary-glucose": false} {
		out, err := expr.Evaluate(fx[name], fhirpath.WithConformsTo(r.ConformsTo))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(out) != 1 || out[0].Value() != want {
			t.Errorf("%s conformsTo(pain-score) = %v, want %v", name, out, want)
		}
	}
	if _, err := expr.Evaluate(fx["peg"]); err == nil {
		t.Error("conformsTo without a validator should be an error, not an answer")
	}
}

// TestAddUserProfile: a differential-only StructureDefinition becomes a
// usable profile; a broken one is refused with the element at fault.
func TestAddUserProfile(t *testing.T) {
	r, err := New()
	if err != nil {
		t.Fatal(err)
	}
	sd := map[string]any{
		"resourceType": "StructureDefinition", "url": "http://example.org/fhir/StructureDefinition/final-hr",
		"name": "FinalHeartRate", "status": "active", "kind": "resource", "abstract": false, "type": "Observation",
		"baseDefinition": "http://hl7.org/fhir/StructureDefinition/heartrate", "derivation": "constraint",
		"differential": map[string]any{"element": []any{
			map[string]any{"id": "Observation.status", "path": "Observation.status", "fixedCode": "final"},
			map[string]any{"id": "Observation.note", "path": "Observation.note", "max": "0"},
		}},
	}
	if _, err := r.Add(bg, sd); err != nil {
		t.Fatal(err)
	}
	res := load(t, "../testdata/examples/Observation-heart-rate.json")
	url := "http://example.org/fhir/StructureDefinition/final-hr"
	if errs := errorsOf(r.Validate(bg, res, Options{Profiles: []string{url}})); len(errs) > 0 {
		t.Fatalf("heart-rate example against final-hr:%s", issuesText(errs))
	}
	res["status"] = "preliminary"
	delete(res, "valueQuantity") // also breaks the base heartrate profile's vs-2
	errs := errorsOf(r.Validate(bg, res, Options{Profiles: []string{url}}))
	if !strings.Contains(issuesText(errs), "fixed value fixedCode; profile "+url) || !strings.Contains(issuesText(errs), "invariant vs-2") {
		t.Errorf("want the fixed status and the inherited vs-2:%s", issuesText(errs))
	}
	bad := copyRes(sd)
	bad["url"] = "http://example.org/fhir/StructureDefinition/bad"
	bad["differential"].(map[string]any)["element"] = []any{map[string]any{"id": "Observation.nosuch", "path": "Observation.nosuch", "min": 1}}
	if _, err := r.Add(bg, bad); err == nil || !strings.Contains(err.Error(), "Observation.nosuch") {
		t.Errorf("Add(bad) = %v, want an error naming Observation.nosuch", err)
	}
	if _, err := r.Definition(bg, "http://example.org/none"); err == nil {
		t.Error("unknown profile found")
	}
}
