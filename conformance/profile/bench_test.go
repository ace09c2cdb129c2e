package profile

import "testing"

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
	b.Run("core+pain-score", func(b *testing.B) {
		for b.Loop() {
			r.Validate(bg, fx["pain-score-integer"], Options{})
		}
	})
}
