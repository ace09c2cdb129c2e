package profile_test

import (
	"context"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/conformance/profile"
	"github.com/anodyne-fhir/anodyne/demo"
)

// TestDemoData: the demo data set, which anodyne demo writes through the
// import pipeline, meets the core definitions (or core invariants on
// writes would refuse it), and its pain scores, PEG panels, glucose
// readings and vital signs meet Anodyne's and the R4 vital-signs profiles.
func TestDemoData(t *testing.T) {
	r, err := profile.New()
	if err != nil {
		t.Fatal(err)
	}
	ds := demo.Generate(demo.Options{Patients: 3, Days: 10})
	byCode := map[string]string{
		"72514-3": profile.BaseURL + "anodyne-pain-score",
		"91148-7": profile.BaseURL + "anodyne-peg",
		"41653-7": profile.BaseURL + "anodyne-capillary-glucose",
		"8867-4":  "http://hl7.org/fhir/StructureDefinition/heartrate",
		"85354-9": "http://hl7.org/fhir/StructureDefinition/bp",
		"2708-6":  "http://hl7.org/fhir/StructureDefinition/oxygensat",
		"29463-7": "http://hl7.org/fhir/StructureDefinition/bodyweight",
	}
	checked := map[string]int{}
	for _, res := range ds.Resources {
		var profiles []string
		if res["resourceType"] == "Observation" {
			code, _ := res["code"].(map[string]any)
			for _, c := range code["coding"].([]any) {
				if p, ok := byCode[c.(map[string]any)["code"].(string)]; ok {
					profiles = append(profiles, p)
				}
			}
		}
		issues := r.Validate(context.Background(), res, profile.Options{Profiles: profiles})
		var errs []string
		for _, is := range issues {
			if is.Severity == "error" {
				errs = append(errs, is.Expression+": "+is.Diagnostics)
			}
		}
		if len(errs) > 0 {
			t.Errorf("%s/%s against core and %v:\n  %s", res["resourceType"], res["id"], profiles, strings.Join(errs, "\n  "))
		}
		for _, p := range profiles {
			checked[p]++
		}
	}
	for _, p := range byCode {
		if checked[p] == 0 {
			t.Logf("no demo resource checked against %s", p)
		}
	}
}
