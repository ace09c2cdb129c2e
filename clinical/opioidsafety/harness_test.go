package opioidsafety_test

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

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/clinical/opioid"
	"github.com/anodyne-fhir/anodyne/clinical/opioidsafety"
	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/mongo"
	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

var mongoServer *mongotest.Shared

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "anodyne-opioid-ferretdb-")
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

type backend struct {
	name string
	open func(t testing.TB) storage.Backend
}

func backends() []backend {
	return []backend{
		{"sqlite", func(t testing.TB) storage.Backend {
			b, err := sqlite.Open(context.Background(), t.TempDir())
			if err != nil {
				t.Fatalf("open sqlite: %v", err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		}},
		{"mongo", func(t testing.TB) storage.Backend {
			srv := mongoServer.Get(t)
			b, err := mongo.Open(context.Background(), srv.URI, mongotest.Database(t))
			if err != nil {
				t.Fatalf("open mongo: %v", err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		}},
	}
}

var (
	partsOnce sync.Once
	validator *conformance.Validator
	registry  *resources.Registry
	table     *opioid.Table
	partsErr  error
)

func parts(t testing.TB) (*conformance.Validator, *resources.Registry, *opioid.Table) {
	t.Helper()
	partsOnce.Do(func() {
		if validator, partsErr = conformance.NewValidator(); partsErr != nil {
			return
		}
		if registry, partsErr = resources.Load(); partsErr != nil {
			return
		}
		table, partsErr = opioid.Load()
	})
	if partsErr != nil {
		t.Fatalf("loading parts: %v", partsErr)
	}
	return validator, registry, table
}

// withPrincipal stands in for token verification (tested in package auth
// and end to end in cmd/anodyne): every request carries principal p, and
// the real SMART decision point (auth.Policy) judges it.
func withPrincipal(p *auth.Principal) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			c.SetRequest(r.WithContext(auth.WithPrincipal(r.Context(), p)))
			return next(c)
		}
	}
}

type server struct {
	srv  *fhir.Server
	root string
	hc   *http.Client
}

// start runs the real FHIR server with the opioid observer and $mme on
// b; with a principal, authorization is on through auth.Policy.
func start(t testing.TB, b storage.Backend, p *auth.Principal, mount func(*fhir.Server, *fhir.Config)) *server {
	t.Helper()
	v, reg, tab := parts(t)
	ts := httptest.NewUnstartedServer(nil)
	cfg := fhir.Config{
		BaseURL:           "http://" + ts.Listener.Addr().String(),
		Backend:           b,
		Validator:         v,
		Registry:          reg,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		Observers:         []fhir.CommitObserver{opioidsafety.NewObserver(tab, nil)},
		PatientOperations: []fhir.PatientOperation{opioidsafety.MMEOperation(tab)},
	}
	if p != nil {
		cfg.Authorizer = auth.NewPolicy(reg)
		cfg.Middleware = withPrincipal(p)
	}
	srv, err := fhir.New(cfg)
	if err != nil {
		t.Fatalf("fhir.New: %v", err)
	}
	if mount != nil {
		mount(srv, &cfg)
	}
	ts.Config.Handler = srv.Handler()
	ts.Start()
	t.Cleanup(ts.Close)
	t.Cleanup(func() { srv.Close() })
	return &server{srv: srv, root: ts.URL, hc: ts.Client()}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request to path under the server root ("/fhir/Patient/1").
func (s *server) do(t testing.TB, method, path, body string, hdr ...string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.root+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	res, err := s.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: raw}
}

func (r response) expect(t testing.TB, want int) response {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d; body: %s", r.status, want, r.body)
	}
	return r
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(r.body))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("not a JSON object (%v): %q", err, r.body)
	}
	return m
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
