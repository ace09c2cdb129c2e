package rpm

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"testing"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/fhir/fhirtest"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
)

var fhirEnv *fhirtest.Env

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild() // never returns
	}
	var err error
	if fhirEnv, err = fhirtest.NewEnv("rpm"); err != nil {
		panic(err)
	}
	code := m.Run()
	if err := fhirEnv.Close(); err != nil {
		slog.Error("stopping FerretDB", "err", err)
	}
	os.Exit(code)
}

type backend = fhirtest.Backend

func backends() []backend { return fhirEnv.Backends() }

func serverParts(t testing.TB) (*conformance.Validator, *resources.Registry) { return fhirEnv.Parts(t) }

// startServer runs the real FHIR server over b behind a real listener,
// with the RPM observer when obs is set.
func startServer(t testing.TB, b storage.Backend, obs fhir.CommitObserver) *client {
	t.Helper()
	s := fhirEnv.Start(t, b, func(cfg *fhir.Config) {
		if obs != nil {
			cfg.Observers = []fhir.CommitObserver{obs}
		}
	})
	return &client{t: t, base: s.Base, srv: s}
}

type client struct {
	t    testing.TB
	base string
	srv  *fhirtest.Server
}

// do sends a request and fails the test unless the status is want.
func (c *client) do(method, path, body string, want int, hdr ...string) map[string]any {
	c.t.Helper()
	if body == "" {
		hdr = append([]string{"Content-Type: application/fhir+json"}, hdr...)
	}
	r := c.srv.Do(c.t, method, path, body, hdr...)
	if r.Status != want {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, want, r.Body)
	}
	if len(r.Body) == 0 {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(r.Body))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		c.t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return m
}
