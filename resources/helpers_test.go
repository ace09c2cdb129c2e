package resources

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// fixedNow is the clock of test registries, so that "ap" is deterministic.
var fixedNow = time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)

// testRegistry loads the embedded definitions once per test binary; the
// registry is read-only in the tests that share it.
var testRegistry = sync.OnceValues(func() (*Registry, error) {
	return Load(WithBaseURL("https://fhir.example.org/r4"), WithClock(func() time.Time { return fixedNow }),
		WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
})

func registry(t testing.TB) *Registry {
	t.Helper()
	r, err := testRegistry()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return r
}

func decode(t testing.TB, s string) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader([]byte(s)))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return m
}

// matches evaluates a compiled expression against entries with the
// storage package's reference evaluator.
func matches(t testing.TB, e storage.Expr, entries []storage.Entry) bool {
	t.Helper()
	ok, err := storage.Matches(e, "x", entries)
	if err != nil {
		t.Fatalf("Matches(%s): %v", e, err)
	}
	return ok
}

// compileOne compiles a single raw value of resourceType.code[:modifier].
func compileOne(t testing.TB, r *Registry, typ, code, modifier, value string) storage.Expr {
	t.Helper()
	e, err := r.Compile(typ, code, modifier, []string{value})
	if err != nil {
		t.Fatalf("Compile(%s.%s:%s=%s): %v", typ, code, modifier, value, err)
	}
	return e
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want %v", err, target)
	}
}

// param builds a throwaway Param of a kind for converter tests.
func param(code string, k storage.Kind) *Param { return &Param{Code: code, Type: k} }
