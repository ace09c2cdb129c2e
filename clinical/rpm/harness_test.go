package rpm

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
	if os.Getenv(crashChildEnv) != "" {
		crashChild() // never returns
	}
	dir, err := os.MkdirTemp("", "anodyne-rpm-ferretdb-")
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
	partsErr  error
)

func serverParts(t testing.TB) (*conformance.Validator, *resources.Registry) {
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

// startServer runs the real FHIR server over b behind a real listener,
// with the RPM observer when obs is set.
func startServer(t testing.TB, b storage.Backend, obs fhir.CommitObserver) *client {
	t.Helper()
	v, r := serverParts(t)
	ts := httptest.NewUnstartedServer(nil)
	cfg := fhir.Config{
		BaseURL: "http://" + ts.Listener.Addr().String(), Backend: b, Validator: v, Registry: r,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if obs != nil {
		cfg.Observers = []fhir.CommitObserver{obs}
	}
	srv, err := fhir.New(cfg)
	if err != nil {
		t.Fatalf("fhir.New: %v", err)
	}
	ts.Config.Handler = srv.Handler()
	ts.Start()
	t.Cleanup(ts.Close)
	t.Cleanup(func() { srv.Close() })
	return &client{t: t, base: ts.URL + "/fhir", hc: ts.Client()}
}

type client struct {
	t    testing.TB
	base string
	hc   *http.Client
}

// do sends a request and fails the test unless the status is want.
func (c *client) do(method, path, body string, want int, hdr ...string) map[string]any {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	res, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, res.StatusCode, want, raw)
	}
	if len(raw) == 0 {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		c.t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return m
}
