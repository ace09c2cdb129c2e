package profile

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestSmokeExamples(t *testing.T) {
	r, err := New()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../testdata/examples/*.json")
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		res, err := decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		issues := r.Validate(context.Background(), res, Options{})
		for _, is := range issues {
			t.Logf("%s: %s %s %s: %s", filepath.Base(f), is.Severity, is.Code, is.Expression, is.Diagnostics)
		}
	}
}
