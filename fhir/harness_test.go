package fhir_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/mongo"
	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// The MongoDB-compatible server (embedded FerretDB, or the real MongoDB of
// ANODYNE_TEST_MONGODB_URI) is started once per test binary, on first use.
var mongoServer *mongotest.Shared

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "anodyne-fhir-ferretdb-")
	if err != nil {
		panic(err)
	}
	mongoServer = mongotest.NewShared(dir)
	code := m.Run()
	if err := mongoServer.Stop(); err != nil {
		slog.Error("stopping FerretDB", "err", err)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// backend is one real storage backend the e2e tests run on.
type backend struct {
	name string
	open func(t testing.TB) storage.Backend
}

// backends lists every backend; each e2e test runs on all of them.
func backends() []backend {
	return []backend{
		{"sqlite", func(t testing.TB) storage.Backend {
			b, err := sqliteOpen(t.TempDir())
			if err != nil {
				t.Fatalf("open sqlite: %v", err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		}},
		{"mongo", func(t testing.TB) storage.Backend {
			srv := mongoServer.Get(t)
			_, reg := parts(t)
			b, err := mongo.Open(context.Background(), srv.URI, mongotest.Database(t), mongo.WithPartitioning(reg.Partitioning()))
			if err != nil {
				t.Fatalf("open mongo: %v", err)
			}
			t.Cleanup(func() { b.Close() })
			if d, ok := storage.Backend(b).(storage.Describer); ok {
				for _, n := range d.Capabilities(context.Background()).Notes {
					t.Logf("backend note: %s", n)
				}
			}
			return b
		}},
	}
}

func sqliteOpen(dir string) (storage.Backend, error) {
	return sqlite.Open(context.Background(), dir)
}

// shared parts that are expensive to build and immutable once built.
var (
	partsOnce sync.Once
	validator *conformance.Validator
	registry  *resources.Registry
	partsErr  error
)

func parts(t testing.TB) (*conformance.Validator, *resources.Registry) {
	t.Helper()
	partsOnce.Do(func() {
		if validator, partsErr = conformance.NewValidator(); partsErr != nil {
			return
		}
		registry, partsErr = resources.Load()
	})
	if partsErr != nil {
		t.Fatalf("loading validator/registry: %v", partsErr)
	}
	return validator, registry
}

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
	v, r := parts(t)
	ts := httptest.NewUnstartedServer(nil)
	cfg := fhir.Config{
		BaseURL:   "http://" + ts.Listener.Addr().String(),
		Backend:   b,
		Validator: v,
		Registry:  r,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := fhir.New(cfg)
	if err != nil {
		t.Fatalf("fhir.New: %v", err)
	}
	ts.Config.Handler = srv.Handler()
	ts.Start()
	t.Cleanup(ts.Close)
	t.Cleanup(func() { srv.Close() })
	return &client{t: t, base: ts.URL + "/fhir", root: ts.URL, hc: ts.Client()}, srv
}

type client struct {
	t    testing.TB
	base string // FHIR base
	root string
	hc   *http.Client
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
	u := path
	if !strings.HasPrefix(path, "http") {
		u = c.base + path
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		c.t.Fatalf("new request: %v", err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	res, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: raw}
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
