package deid

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/default_rules.golden.ndjson from the current code")

const goldenFile = "testdata/default_rules.golden.ndjson"

// goldenInputs are every resource of the Synthea bundles and of the R4
// examples, in a fixed order.
func goldenInputs(t testing.TB) []map[string]any {
	t.Helper()
	out := syntheaResources(t)
	files, _ := filepath.Glob("../testdata/r4-examples/resources/*.json")
	slices.Sort(files)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, decode(t, string(raw)))
	}
	return out
}

// goldenLines de-identifies every input with the default rules (fixed key
// and clock) and writes one line per resource: its output and the
// pseudonyms reported, each as canonical JSON.
func goldenLines(t testing.TB) []byte {
	t.Helper()
	d, err := New(DefaultRules(), WithNow(func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for i, res := range goldenInputs(t) {
		out, result, err := d.Apply(res, key)
		if err != nil {
			t.Fatalf("resource %d (%s/%s): %v", i, res["resourceType"], res["id"], err)
		}
		line, err := json.Marshal(map[string]any{"out": out, "pseudonyms": result.Pseudonyms})
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// TestDefaultRulesGolden holds Apply with the default rules, byte for
// byte, to the output the code produced when the golden file was written
// (commit "deid: golden of the default rules", before the per-type rule
// plans). It is a regression guard, not an independent expectation: what
// the output must satisfy is TestSafeHarborOnSynthea's business. Rewrite
// it with -update-golden only for an intended change of the output.
func TestDefaultRulesGolden(t *testing.T) {
	got := goldenLines(t)
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(goldenFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenFile, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatalf("%v (write it with -update-golden)", err)
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	if len(gl) != len(wl) {
		t.Fatalf("%d output lines, the golden has %d", len(gl), len(wl))
	}
	bad := 0
	for i := range gl {
		if gl[i] != wl[i] {
			bad++
			if bad <= 3 {
				t.Errorf("resource %d differs:\n got %s\nwant %s", i, clip(gl[i]), clip(wl[i]))
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d resources differ from the golden", bad, len(gl)-1)
	}
	if len(gl) < 400 {
		t.Fatalf("only %d resources: the golden would prove little", len(gl)-1)
	}
}

func clip(s string) string {
	if len(s) > 600 {
		return fmt.Sprintf("%s… (%d bytes)", s[:600], len(s))
	}
	return s
}

// BenchmarkApply de-identifies the golden inputs with the default rules
// (copies are decoded before the timer; Apply works in place).
func BenchmarkApply(b *testing.B) {
	d, err := New(DefaultRules())
	if err != nil {
		b.Fatal(err)
	}
	inputs := goldenInputs(b)
	raws := make([][]byte, len(inputs))
	for i, r := range inputs {
		raws[i], _ = json.Marshal(r)
	}
	b.Run("synthea+examples", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			copies := make([]map[string]any, len(raws))
			for i, raw := range raws {
				copies[i] = decode(b, string(raw))
			}
			b.StartTimer()
			for _, c := range copies {
				if _, _, err := d.Apply(c, key); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(raws))/1000, "us/resource")
		b.ReportMetric(0, "ns/op")
	})
	obs := `{"resourceType":"Observation","id":"o1","status":"final",
 "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
 "code":{"coding":[{"system":"http://loinc.org","code":"72514-3","display":"Pain severity"}],"text":"Pain"},
 "subject":{"reference":"Patient/p1","display":"Ana"},"effectiveDateTime":"2024-03-01T08:01:00Z",
 "meta":{"versionId":"1","lastUpdated":"2024-03-01T08:01:00.123Z"},
 "valueQuantity":{"value":7,"unit":"{score}","system":"http://unitsofmeasure.org","code":"{score}"},"note":[{"text":"free text"}]}`
	b.Run("pain-observation", func(b *testing.B) {
		const batch = 1000
		done := 0
		for b.Loop() {
			b.StopTimer()
			copies := make([]map[string]any, batch)
			for i := range copies {
				copies[i] = decode(b, obs)
			}
			b.StartTimer()
			for _, c := range copies {
				if _, _, err := d.Apply(c, key); err != nil {
					b.Fatal(err)
				}
			}
			done += batch
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(done)/1000, "us/resource")
		b.ReportMetric(0, "ns/op")
	})
}
