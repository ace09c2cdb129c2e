package resources

import (
	"path/filepath"
	"testing"
)

func BenchmarkIndex(b *testing.B) {
	r := registry(b)
	cases := []struct {
		name string
		res  map[string]any
	}{
		{"Observation", decode(b, observationJSON)},
		{"ObservationBloodPressure", decode(b, bloodPressureJSON)},
		{"Patient", decode(b, patientJSON)},
		{"PatientExample", decodeFile(b, filepath.Join("testdata", "r4-examples", "Patient-example.json"))},
	}
	for _, c := range cases {
		typ := c.res["resourceType"].(string)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Index(typ, c.res); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	r := registry(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Compile("Observation", "code-value-quantity", "", []string{"http://loinc.org|8480-6$gt100|http://unitsofmeasure.org|mm[Hg]"}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLoad(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(); err != nil {
			b.Fatal(err)
		}
	}
}
