// Package fhirtest starts the real FHIR server for the tests of packages
// built on it (clinical rules, research, subscriptions, CDS Hooks): on every
// real backend (SQLite, and the embedded FerretDB or the MongoDB of
// ANODYNE_TEST_MONGODB_URI), behind a real HTTP listener.
//
// Only tests import it: it links FerretDB. It knows the fhir.Config a
// server needs, never what a caller's observers or operations do.
package fhirtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/mongo"
	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// Env is what the tests of one binary share: the MongoDB-compatible server
// (started on first use) and the validator and registry (built once, then
// immutable). Make it in TestMain and Close it after m.Run.
type Env struct {
	dir   string
	mongo *mongotest.Shared

	once      sync.Once
	validator *conformance.Validator
	registry  *resources.Registry
	err       error
}

// NewEnv makes the shared parts of a test binary; name labels its
// temporary directory.
func NewEnv(name string) (*Env, error) {
	dir, err := os.MkdirTemp("", "anodyne-"+name+"-ferretdb-")
	if err != nil {
		return nil, fmt.Errorf("fhirtest: temporary directory: %w", err)
	}
	return &Env{dir: dir, mongo: mongotest.NewShared(dir)}, nil
}

// Close stops the MongoDB-compatible server if it was started.
func (e *Env) Close() error {
	err := e.mongo.Stop()
	if rmErr := os.RemoveAll(e.dir); err == nil {
		err = rmErr
	}
	return err
}

// Parts returns the validator and the search-parameter registry.
func (e *Env) Parts(t testing.TB) (*conformance.Validator, *resources.Registry) {
	t.Helper()
	e.once.Do(func() {
		if e.validator, e.err = conformance.NewValidator(); e.err != nil {
			return
		}
		e.registry, e.err = resources.Load()
	})
	if e.err != nil {
		t.Fatalf("fhirtest: loading validator and registry: %v", e.err)
	}
	return e.validator, e.registry
}

// Backend is one real storage backend a test runs on.
type Backend struct {
	Name string
	Open func(t testing.TB) storage.Backend
}

// Backends lists every backend; an end-to-end test runs on each. Each Open
// gives a fresh store, closed at the test's cleanup; MongoDB's is
// partitioned as anodyne serve opens it.
func (e *Env) Backends() []Backend {
	return []Backend{
		{"sqlite", func(t testing.TB) storage.Backend {
			t.Helper()
			b, err := sqlite.Open(context.Background(), t.TempDir())
			if err != nil {
				t.Fatalf("open sqlite: %v", err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		}},
		{"mongo", func(t testing.TB) storage.Backend {
			t.Helper()
			srv := e.mongo.Get(t)
			_, reg := e.Parts(t)
			b, err := mongo.Open(context.Background(), srv.URI, mongotest.Database(t), mongo.WithPartitioning(reg.Partitioning()))
			if err != nil {
				t.Fatalf("open mongo: %v", err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		}},
	}
}

// SharedStore opens one store twice, as two server processes sharing it
// would (replicas on one MongoDB database, processes on one SQLite file).
type SharedStore struct {
	Name string
	Open func(t testing.TB) [2]storage.Backend
}

// SharedStores lists a shared store per backend; each Open gives a fresh
// store, both handles closed at the test's cleanup.
func (e *Env) SharedStores() []SharedStore {
	return []SharedStore{
		{"sqlite one file", func(t testing.TB) [2]storage.Backend {
			t.Helper()
			dir := t.TempDir()
			var out [2]storage.Backend
			for i := range out {
				b, err := sqlite.Open(context.Background(), dir)
				if err != nil {
					t.Fatalf("open sqlite: %v", err)
				}
				t.Cleanup(func() { b.Close() })
				out[i] = b
			}
			return out
		}},
		{"mongo one database", func(t testing.TB) [2]storage.Backend {
			t.Helper()
			srv := e.mongo.Get(t)
			_, reg := e.Parts(t)
			db := mongotest.Database(t)
			var out [2]storage.Backend
			for i := range out {
				b, err := mongo.Open(context.Background(), srv.URI, db, mongo.WithPartitioning(reg.Partitioning()))
				if err != nil {
					t.Fatalf("open mongo: %v", err)
				}
				t.Cleanup(func() { b.Close() })
				out[i] = b
			}
			return out
		}},
	}
}

// Server is a running FHIR server.
type Server struct {
	FHIR   *fhir.Server
	Root   string // http://127.0.0.1:port
	Base   string // Root + "/fhir"
	Client *http.Client
}

// Start runs the real server over b; mod adjusts the configuration
// (observers, operations, authorization) before fhir.New. The server and
// its workers stop at the test's cleanup.
func (e *Env) Start(t testing.TB, b storage.Backend, mod func(*fhir.Config)) *Server {
	t.Helper()
	return e.start(t, b, mod, nil)
}

// start is Start with mount, when set, adding routes to the server's Echo
// before it serves.
func (e *Env) start(t testing.TB, b storage.Backend, mod func(*fhir.Config), mount func(*echo.Echo)) *Server {
	t.Helper()
	v, reg := e.Parts(t)
	ts := httptest.NewUnstartedServer(nil)
	cfg := fhir.Config{
		BaseURL:   "http://" + ts.Listener.Addr().String(),
		Backend:   b,
		Validator: v,
		Registry:  reg,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := fhir.New(cfg)
	if err != nil {
		t.Fatalf("fhir.New: %v", err)
	}
	if mount != nil {
		mount(srv.Echo())
	}
	ts.Config.Handler = srv.Handler()
	ts.Start()
	t.Cleanup(ts.Close)
	t.Cleanup(func() { srv.Close() })
	return &Server{FHIR: srv, Root: ts.URL, Base: ts.URL + "/fhir", Client: ts.Client()}
}

// WithPrincipal stands in for token verification (tested in package auth
// and end to end in cmd/anodyne): every request carries principal p, and
// the real decision point (auth.Policy, set as Config.Authorizer) judges it.
func WithPrincipal(p *auth.Principal) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			c.SetRequest(r.WithContext(auth.WithPrincipal(r.Context(), p)))
			return next(c)
		}
	}
}

// Response is an answer read in full.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends a request; path is relative to the FHIR base unless it is an
// absolute URL. hdr is a list of "Name: value" strings. A body is sent as
// application/fhir+json unless hdr sets Content-Type.
func (s *Server) Do(t testing.TB, method, path, body string, hdr ...string) Response {
	t.Helper()
	u := path
	if !strings.HasPrefix(path, "http://") && !strings.HasPrefix(path, "https://") {
		u = s.Base + path
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	res, err := s.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return Response{Status: res.StatusCode, Header: res.Header, Body: raw}
}

// Expect fails the test unless the status is want.
func (r Response) Expect(t testing.TB, want int) Response {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status %d, want %d; body: %s", r.Status, want, r.Body)
	}
	return r
}

// JSON decodes the body as an object, keeping numbers as written.
func (r Response) JSON(t testing.TB) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(r.Body))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("response body is not a JSON object (%v): %q", err, r.Body)
	}
	return m
}

// Get walks a decoded JSON value by object keys and array indexes
// (Get(bundle, "entry", 0, "resource", "id")); nil where the path ends.
func Get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			a, _ := v.([]any)
			if k < 0 || k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

// Mongo returns the MongoDB-compatible server, starting it on first use, for
// a test that opens its own databases on it (a crash test's child process).
func (e *Env) Mongo(t testing.TB) *mongotest.Server {
	t.Helper()
	return e.mongo.Get(t)
}
