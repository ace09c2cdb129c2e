package fhir_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/fhir/fhirtest"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// env holds what the tests of this binary share: the MongoDB-compatible
// server (embedded FerretDB, or the real MongoDB of
// ANODYNE_TEST_MONGODB_URI) and the validator and registry.
var env *fhirtest.Env

func TestMain(m *testing.M) {
	var err error
	if env, err = fhirtest.NewEnv("fhir"); err != nil {
		panic(err)
	}
	code := m.Run()
	if err := env.Close(); err != nil {
		slog.Error("stopping FerretDB", "err", err)
	}
	os.Exit(code)
}

// backend is one real storage backend the e2e tests run on.
type backend struct {
	name string
	open func(t testing.TB) storage.Backend
}

// backends lists every backend; each e2e test runs on all of them.
func backends() []backend {
	var out []backend
	for _, b := range env.Backends() {
		out = append(out, backend{name: b.Name, open: b.Open})
	}
	return out
}

func sqliteOpen(dir string) (storage.Backend, error) {
	return sqlite.Open(context.Background(), dir)
}

func parts(t testing.TB) (*conformance.Validator, *resources.Registry) { return env.Parts(t) }

// newServer starts the real server on a backend behind a real HTTP listener.
func newServer(t testing.TB, b storage.Backend, mod func(*fhir.Config)) *client {
	t.Helper()
	c, _ := startServer(t, b, mod)
	return c
}

// startServer is newServer that also hands back the *fhir.Server; its
// background workers stop at cleanup.
func startServer(t testing.TB, b storage.Backend, mod func(*fhir.Config)) (*client, *fhir.Server) {
	t.Helper()
	s := env.Start(t, b, mod)
	return &client{t: t, base: s.Base, root: s.Root, srv: s}, s.FHIR
}

type client struct {
	t    testing.TB
	base string // FHIR base
	root string
	srv  *fhirtest.Server
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request; path is relative to the FHIR base unless it starts
// with "http". hdr is a list of "Name: value" strings.
func (c *client) do(method, path, body string, hdr ...string) response {
	c.t.Helper()
	r := c.srv.Do(c.t, method, path, body, hdr...)
	return response{status: r.Status, header: r.Header, body: r.Body}
}

// json decodes the body keeping numbers as written.
func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(r.body))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("response body is not a JSON object (%v): %q", err, r.body)
	}
	return m
}

// expect fails unless the status is want.
func (r response) expect(t testing.TB, want int) response {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d; body: %s", r.status, want, r.body)
	}
	return r
}

// outcome checks that the body is an OperationOutcome and returns its
// first issue's code.
func (r response) outcome(t testing.TB) string {
	t.Helper()
	m := r.json(t)
	if m["resourceType"] != "OperationOutcome" {
		t.Fatalf("body is a %v, want OperationOutcome: %s", m["resourceType"], r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
		t.Errorf("Content-Type %q, want application/fhir+json", ct)
	}
	issues, _ := m["issue"].([]any)
	if len(issues) == 0 {
		t.Fatalf("OperationOutcome without issues: %s", r.body)
	}
	code, _ := issues[0].(map[string]any)["code"].(string)
	return code
}

// get walks a decoded JSON value by keys and indexes ("meta", "versionId").
// entryList is a Bundle's entries; FHIR JSON leaves out an empty "entry".
func entryList(v any) []any {
	l, _ := v.([]any)
	return l
}

func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			a, _ := v.([]any)
			if k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}
