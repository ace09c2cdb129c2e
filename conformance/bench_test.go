package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
)

// Run with: go test -run '^$' -bench . -benchmem ./conformance
// Each Validate benchmark has a Decode twin: encoding/json decoding the
// same bytes into map[string]any, the least any handler does with a body.

var benchInputs = []struct{ name, file string }{
	{"ObservationPain", "testdata/valid/observation-pain.json"},
	{"ObservationVitals", "testdata/examples/Observation-vitals-panel.json"},
	{"SyntheaBundle", "testdata/synthea/Malcolm_Dach_281f4a03-57e9-4b22-a322-68890ff22172.json"},
}

func BenchmarkValidate(b *testing.B) {
	v := newTestValidator(b)
	for _, in := range benchInputs {
		body := readFile(b, in.file)
		if _, issues := v.Validate(context.Background(), body); HasErrors(issues) {
			b.Fatalf("%s is invalid:%s", in.file, formatIssues(issues))
		}
		b.Run(in.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, issues := v.Validate(context.Background(), body); len(issues) != 0 {
					b.Fatal("issues on a valid body")
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, in := range benchInputs {
		body := readFile(b, in.file)
		b.Run(in.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				var m map[string]any
				d := json.NewDecoder(bytes.NewReader(body))
				d.UseNumber()
				if err := d.Decode(&m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStrict isolates the strict token pass (which also decodes).
func BenchmarkStrict(b *testing.B) {
	for _, in := range benchInputs {
		body := readFile(b, in.file)
		b.Run(in.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, issues, _ := decodeStrict(body, DefaultMaxDepth); len(issues) != 0 {
					b.Fatal("issues on a valid body")
				}
			}
		})
	}
}

// BenchmarkNewValidator measures start-up: loading and patching the
// embedded schema, without compiling any resource type.
func BenchmarkNewValidator(b *testing.B) {
	for b.Loop() {
		if _, err := NewValidator(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSchema compares the quick walk of the schema with jsonschema on
// the same decoded resources (top-level only).
func BenchmarkSchema(b *testing.B) {
	s, err := newSchemaSet()
	if err != nil {
		b.Fatal(err)
	}
	for _, in := range benchInputs {
		res, issues, rt := decodeStrict(readFile(b, in.file), DefaultMaxDepth)
		if len(issues) != 0 {
			b.Fatalf("%s: strict issues", in.file)
		}
		sch, err := s.forType(rt)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(in.name+"/quick", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !s.quick.certain(rt, res) {
					b.Fatal("not certain of a valid resource")
				}
			}
		})
		b.Run(in.name+"/jsonschema", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := sch.Validate(res); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkValidateSyntheaEntries validates the entries of a Synthea bundle
// one by one, as transaction ingest does; ns/resource is the figure to watch.
func BenchmarkValidateSyntheaEntries(b *testing.B) {
	v := newTestValidator(b)
	var bundle struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(readFile(b, benchInputs[2].file), &bundle); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, e := range bundle.Entry {
			if _, issues := v.Validate(context.Background(), e.Resource); len(issues) != 0 {
				b.Fatalf("issues on a valid entry:%s", formatIssues(issues))
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(bundle.Entry)), "ns/resource")
}
