package fhir_test

import (
	"os"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/fhir"
)

// benchHeartRate is a Synthea-like heart-rate reading; benchClaims is the
// same claiming the R4 heart-rate profile.
const benchHeartRate = `{"resourceType":"Observation","status":"final",
"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs","display":"vital-signs"}]}],
"code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}],"text":"Heart rate"},
"subject":{"reference":"Patient/bench-patient"},"encounter":{"reference":"Encounter/bench-encounter"},
"effectiveDateTime":"2024-03-01T10:00:00+01:00","issued":"2024-03-01T10:05:00.000+01:00",
"valueQuantity":{"value":72,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}`

var benchClaims = strings.Replace(benchHeartRate, `"status":"final",`, `"meta":{"profile":["http://hl7.org/fhir/StructureDefinition/heartrate"]},"status":"final",`, 1)

// BenchmarkProfileWrite is the cost of a create on SQLite (real HTTP,
// auth off) without profile validation, with the core definitions and
// invariants, with a claimed profile on top, and with the claimed profile
// alone; and of a Synthea patient Bundle (about 300 resources) posted as
// a transaction, without and with the core definitions. Ratios to "plain"
// are the per-write cost of validation.
//
//	go test ./fhir -run XXX -bench BenchmarkProfileWrite -benchtime 200x
func BenchmarkProfileWrite(b *testing.B) {
	prof := withProfiles(b)
	configs := []struct {
		name string
		mod  func(*fhir.Config)
		body string
	}{
		{"plain", nil, benchHeartRate},
		{"core", prof, benchHeartRate},
		{"core+heartrate", prof, benchClaims},
		{"heartrate-only", func(c *fhir.Config) { prof(c); c.SkipCoreInvariants = true }, benchClaims},
	}
	for _, cfg := range configs {
		b.Run("create/"+cfg.name, func(b *testing.B) {
			c := newServer(b, backends()[0].open(b), cfg.mod)
			for b.Loop() {
				c.do("POST", "/Observation", cfg.body).expect(b, 201)
			}
		})
	}
	bundle, err := os.ReadFile("../conformance/testdata/synthea/Malcolm_Dach_281f4a03-57e9-4b22-a322-68890ff22172.json")
	if err != nil {
		b.Fatal(err)
	}
	for _, cfg := range configs[:2] {
		b.Run("synthea-transaction/"+cfg.name, func(b *testing.B) {
			c := newServer(b, backends()[0].open(b), cfg.mod)
			for b.Loop() {
				c.do("POST", "", string(bundle)).expect(b, 200)
			}
		})
	}
}
