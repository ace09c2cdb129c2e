package profile

import (
	"strings"
	"testing"
)

// TestAnodyneProfilesValid: the valid fixtures meet the profile they claim
// (and the core), with no error.
func TestAnodyneProfilesValid(t *testing.T) {
	r := registry(t)
	fx := validFixtures(t)
	if len(fx) < 7 {
		t.Fatalf("only %d fixtures", len(fx))
	}
	for name, res := range fx {
		if claimed := claimedProfiles(res); len(claimed) != 1 || !strings.HasPrefix(claimed[0], BaseURL) {
			t.Errorf("%s claims %v, not one Anodyne profile", name, claimed)
		}
		if errs := errorsOf(r.Validate(bg, res, Options{})); len(errs) > 0 {
			t.Errorf("%s: unexpected errors:%s", name, issuesText(errs))
		}
	}
}

// TestAnodyneProfilesBroken breaks each fixture one rule at a time and
// expects an error naming the element and the rule.
func TestAnodyneProfilesBroken(t *testing.T) {
	r := registry(t)
	const loinc = `"http://loinc.org"`
	cases := []struct {
		fixture, name string
		path          string
		value         string // JSON; "" deletes
		wantPath      string
		wantRule      string
	}{
		// pain score
		{"pain-score-integer", "no category", "category", "", "Observation.category", "slice survey"},
		{"pain-score-integer", "category not survey", "category[0].coding[0].code", `"vital-signs"`, "Observation.category", "slice survey"},
		{"pain-score-integer", "heart-rate code", "code.coding[0].code", `"8867-4"`, "Observation.code", "binding http://anodyne-fhir.org/fhir/ValueSet/anodyne-pain-score-codes (required)"},
		{"pain-score-integer", "no subject", "subject", "", "Observation.subject", "cardinality 1..1"},
		{"pain-score-integer", "group subject", "subject.reference", `"Group/g1"`, "Observation.subject", "reference target"},
		{"pain-score-integer", "no effective time", "effectiveDateTime", "", "Observation.effective", "cardinality 1..1"},
		{"pain-score-integer", "score 11", "valueInteger", `11`, "Observation", "invariant anodyne-pain-1"},
		{"pain-score-integer", "negative score", "valueInteger", `-1`, "Observation", "invariant anodyne-pain-1"},
		{"pain-score-integer", "no score", "valueInteger", "", "Observation", "invariant anodyne-pain-2"},
		{"pain-score-integer", "string score", "valueInteger", "", "", ""},
		{"pain-score-quantity", "wrong unit", "valueQuantity.code", `"mm[Hg]"`, "Observation.valueQuantity.code", "fixed value fixedCode"},
		{"pain-score-quantity", "score 10.5", "valueQuantity.value", `10.5`, "Observation", "invariant anodyne-pain-1"},
		{"pain-score-quantity", "no unit system", "valueQuantity.system", "", "Observation.valueQuantity.system", "cardinality 1..1"},
		{"pain-score-integer", "with components", "component", `[{"code":{"text":"x"},"valueInteger":1}]`, "Observation.component", "cardinality 0..0"},
		// PEG
		{"peg", "missing enjoyment item", "component[1]", "", "Observation.component", "slice enjoyment"},
		{"peg", "item above 10", "component[0].valueInteger", `12`, "Observation.component[0].valueInteger", "invariant anodyne-peg-2"},
		{"peg", "mean not the mean", "component[3].valueQuantity.value", `9`, "Observation", "invariant anodyne-peg-1"},
		{"peg", "foreign component", "component[4]", `{"code":{"coding":[{"system":` + loinc + `,"code":"72514-3"}]},"valueInteger":3}`, "Observation.component[4]", "closed slicing of Observation.component"},
		{"peg", "second pain item", "component[4]", `{"code":{"coding":[{"system":` + loinc + `,"code":"75893-8"}]},"valueInteger":3}`, "Observation.component", "slice pain, cardinality 1..1"},
		{"peg", "panel code wrong", "code.coding[0].code", `"72514-3"`, "Observation.code", "pattern patternCodeableConcept"},
		{"peg", "item as string", "component[2].valueInteger", "", "", ""},
		{"peg", "no mean at all", "component[3]", "", "Observation", "invariant anodyne-peg-4"},
		{"peg", "mean out of range", "component[3].valueQuantity.value", `11`, "Observation.component[3].valueQuantity", "invariant anodyne-peg-3"},
		{"peg", "not a survey", "category", "", "Observation.category", "slice survey"},
		// capillary glucose
		{"capillary-glucose", "unit g/L", "valueQuantity.code", `"g/L"`, "Observation.valueQuantity.code", "binding http://anodyne-fhir.org/fhir/ValueSet/anodyne-glucose-units (required)"},
		{"capillary-glucose", "not UCUM", "valueQuantity.system", `"http://example.org/units"`, "Observation.valueQuantity.system", "fixed value fixedUri"},
		{"capillary-glucose", "serum glucose code", "code.coding[0].code", `"2345-7"`, "Observation.code", "pattern patternCodeableConcept"},
		{"capillary-glucose", "string value", "valueQuantity", "", "", ""},
		{"capillary-glucose", "no subject", "subject", "", "Observation.subject", "cardinality 1..1"},
		// virtual visit
		{"virtual-visit", "ambulatory class", "class.code", `"AMB"`, "Encounter.class", "pattern patternCoding"},
		{"virtual-visit", "no period", "period", "", "Encounter.period", "cardinality 1..1"},
		{"virtual-visit", "no subject", "subject", "", "Encounter.subject", "cardinality 1..1"},
		// pain-management care plan
		{"pain-care-plan", "no pain plan category", "category[0]", "", "CarePlan.category", "slice painPlan"},
		{"pain-care-plan", "addresses nothing", "addresses", "", "CarePlan.addresses", "cardinality 1..*"},
		// The core already restricts addresses to Condition: reported once, by the core.
		{"pain-care-plan", "addresses an Observation", "addresses[0].reference", `"Observation/o1"`, "CarePlan.addresses[0]", "reference target"},
		{"pain-care-plan", "activity is an Appointment", "activity[1].reference.reference", `"Appointment/a1"`, "CarePlan.activity[1].reference", "reference target"},
		{"pain-care-plan", "activity without reference", "activity[0]", `{"detail":{"status":"scheduled"}}`, "CarePlan.activity[0].reference", "cardinality 1..1"},
		{"pain-care-plan", "no activity", "activity", "", "CarePlan.activity", "cardinality 1..*"},
		// opioid MedicationRequest
		{"opioid-medication-request", "SNOMED-coded drug", "medicationCodeableConcept.coding[0].system", `"http://snomed.info/sct"`, "MedicationRequest.medicationCodeableConcept.coding", "slice rxnorm"},
		{"opioid-medication-request", "medication by reference", "medicationCodeableConcept", "", "", ""},
		{"opioid-medication-request", "no dosage", "dosageInstruction", "", "MedicationRequest.dosageInstruction", "cardinality 1..*"},
		{"opioid-medication-request", "no timing", "dosageInstruction[0].timing", "", "MedicationRequest.dosageInstruction[0].timing", "cardinality 1..1"},
		{"opioid-medication-request", "text-only timing", "dosageInstruction[0].timing", `{"code":{"text":"as directed"}}`, "MedicationRequest.dosageInstruction[0].timing.repeat", "cardinality 1..1"},
		{"opioid-medication-request", "no dose", "dosageInstruction[0].doseAndRate", "", "MedicationRequest.dosageInstruction[0].doseAndRate", "cardinality 1..*"},
	}
	fx := validFixtures(t)
	for _, tc := range cases {
		t.Run(tc.fixture+"/"+tc.name, func(t *testing.T) {
			base, ok := fx[tc.fixture]
			if !ok {
				t.Fatalf("no fixture %s", tc.fixture)
			}
			res := copyRes(base)
			url := claimedProfiles(res)[0]
			if tc.name == "addresses an Observation" {
				url = "http://hl7.org/fhir/StructureDefinition/CarePlan"
			}
			var v any
			if tc.value != "" {
				v = js(t, tc.value)
			}
			edit(t, res, tc.path, v)
			wantPath, wantRule := tc.wantPath, tc.wantRule
			// Type cases: replace the deleted value with one of a type the profile forbids.
			if wantRule == "" {
				switch tc.fixture {
				case "opioid-medication-request":
					res["medicationReference"] = map[string]any{"reference": "Medication/m1"}
					wantPath = "MedicationRequest.medicationReference"
				case "peg":
					edit(t, res, "component[2].valueString", "seven")
					wantPath = "Observation.component[2].valueString"
				default:
					res["valueString"] = "six"
					wantPath = "Observation.valueString"
				}
				wantRule = "type"
			}
			issues := r.Validate(bg, res, Options{})
			for _, is := range errorsOf(issues) {
				if is.Expression == wantPath && strings.Contains(is.Diagnostics, "("+wantRule) && strings.Contains(is.Diagnostics, "profile "+url) {
					return
				}
			}
			t.Errorf("no error at %s naming %q and %s; got:%s", wantPath, wantRule, url, issuesText(issues))
		})
	}
}
