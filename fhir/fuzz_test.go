package fhir_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/fhir"
)

// FuzzRequestBody drives the request body path (size cap, parse, validate,
// store, encode) through the real handler on SQLite. Whatever the bytes, the
// answer must be a JSON resource with a 2xx or 4xx status: never a 500,
// never a panic.
func FuzzRequestBody(f *testing.F) {
	f.Add([]byte(observation))
	f.Add([]byte(`{"resourceType":"Patient","birthDate":"1970-02-30"}`))
	f.Add([]byte(`{"resourceType":"Parameters","parameter":[{"name":"resource","resource":{"resourceType":"Patient"}}]}`))
	f.Add([]byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","id":"x"}}]}`))
	f.Add([]byte(`{"resourceType":"Observation","valueQuantity":{"value":1e999}}`))
	f.Add([]byte(`[[[[[[[[[[]]]]]]]]]]`))
	f.Add([]byte(`{"resourceType":"Patient","active":true,"active":null}`))
	if files, _ := filepath.Glob("../testdata/r4-examples/resources/*.json"); len(files) > 0 {
		for _, p := range files[:min(10, len(files))] {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	h := fuzzHandler(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, target := range []string{"/fhir/Observation", "/fhir/Patient/$validate"} {
			req := httptest.NewRequest(http.MethodPost, target, strings.NewReader(string(body)))
			req.Header.Set("Content-Type", "application/fhir+json")
			rec := httptest.NewRecorder()
			done := make(chan struct{})
			go func() { h.ServeHTTP(rec, req); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				// A body that stalls the server is a denial of service.
				t.Fatalf("%s: no answer within 10s for %q", target, body)
			}
			if rec.Code >= 500 {
				t.Fatalf("%s: status %d for %q: %s", target, rec.Code, body, rec.Body.Bytes())
			}
			var out map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out["resourceType"] == nil {
				t.Fatalf("%s: status %d, body is not a resource (%v): %q", target, rec.Code, err, rec.Body.Bytes())
			}
		}
	})
}

// fuzzHandler is the real server on a fresh SQLite store, quiet and with a
// 1 MiB body cap so that each fuzz input stays cheap.
func fuzzHandler(f *testing.F) http.Handler {
	v, r := parts(f)
	b, err := sqliteOpen(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { b.Close() })
	srv, err := fhir.New(fhir.Config{
		BaseURL: "http://fuzz.example", Backend: b, Validator: v, Registry: r,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxBodyBytes: 1 << 20,
	})
	if err != nil {
		f.Fatal(err)
	}
	return srv.Handler()
}
