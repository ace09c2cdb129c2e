package profile

import (
	"path/filepath"
	"testing"
)

// TestSyntheaBundles: every resource of the Synthea bundles (what users
// ingest) meets the core definitions, so that core invariants on writes
// refuse nothing Synthea produces.
func TestSyntheaBundles(t *testing.T) {
	r := registry(t)
	files, _ := filepath.Glob("../testdata/synthea/*.json")
	n := 0
	for _, f := range files {
		b := load(t, f)
		for i, e := range b["entry"].([]any) {
			res := e.(map[string]any)["resource"].(map[string]any)
			n++
			if errs := errorsOf(r.Validate(bg, res, Options{})); len(errs) > 0 {
				t.Errorf("%s entry %d (%s):%s", filepath.Base(f), i, res["resourceType"], issuesText(errs))
			}
		}
		// As a whole: every urn:uuid reference resolves to an entry of an
		// allowed type.
		if errs := errorsOf(r.Validate(bg, b, Options{})); len(errs) > 0 {
			t.Errorf("%s as a Bundle:%s", filepath.Base(f), issuesText(errs))
		}
	}
	if n < 100 {
		t.Fatalf("only %d Synthea resources", n)
	}
	t.Logf("%d Synthea resources meet the core definitions", n)
}
