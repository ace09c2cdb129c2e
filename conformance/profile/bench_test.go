package profile

import (
	"path/filepath"
	"testing"
)

func BenchmarkNew(b *testing.B) {
	for b.Loop() {
		if _, err := New(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidate is the cost of one Validate of a Synthea-like
// Observation with the core invariants, and with a claimed profile too.
func BenchmarkValidate(b *testing.B) {
	r := registry(b)
	fx := validFixtures(b)
	hr := load(b, "../testdata/examples/Observation-heart-rate.json")
	b.Run("core", func(b *testing.B) {
		for b.Loop() {
			r.Validate(bg, hr, Options{IgnoreClaimed: true})
		}
	})
	b.Run("core+vitalsigns", func(b *testing.B) {
		for b.Loop() {
			r.Validate(bg, hr, Options{})
		}
	})
	var synthea []map[string]any
	files, _ := filepath.Glob("../testdata/synthea/*.json")
	for _, f := range files {
		for _, e := range load(b, f)["entry"].([]any) {
			synthea = append(synthea, e.(map[string]any)["resource"].(map[string]any))
		}
	}
	// One op validates every resource of the Synthea bundles (305).
	b.Run("synthea-core", func(b *testing.B) {
		for b.Loop() {
			for _, res := range synthea {
				r.Validate(bg, res, Options{})
			}
		}
	})
	// The same resources as the Bundles they came in: each urn:uuid
	// reference resolves to its entry, whose type is then checked.
	var bundles []map[string]any
	for _, f := range files {
		bundles = append(bundles, load(b, f))
	}
	b.Run("synthea-bundles", func(b *testing.B) {
		for b.Loop() {
			for _, bu := range bundles {
				r.Validate(bg, bu, Options{})
			}
		}
	})
	b.Run("core+pain-score", func(b *testing.B) {
		for b.Loop() {
			r.Validate(bg, fx["pain-score-integer"], Options{})
		}
	})
}
