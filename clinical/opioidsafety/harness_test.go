package opioidsafety_test

import (
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/clinical/opioid"
	"github.com/anodyne-fhir/anodyne/clinical/opioidsafety"
	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/fhir/fhirtest"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
)

var env *fhirtest.Env

func TestMain(m *testing.M) {
	var err error
	if env, err = fhirtest.NewEnv("opioid"); err != nil {
		panic(err)
	}
	code := m.Run()
	if err := env.Close(); err != nil {
		slog.Error("stopping FerretDB", "err", err)
	}
	os.Exit(code)
}

type backend = fhirtest.Backend

func backends() []backend { return env.Backends() }

var (
	tableOnce sync.Once
	table     *opioid.Table
	tableErr  error
)

func parts(t testing.TB) (*conformance.Validator, *resources.Registry, *opioid.Table) {
	t.Helper()
	tableOnce.Do(func() { table, tableErr = opioid.Load() })
	if tableErr != nil {
		t.Fatalf("loading the opioid table: %v", tableErr)
	}
	v, reg := env.Parts(t)
	return v, reg, table
}

type server struct{ *fhirtest.Server }

// start runs the real FHIR server with the opioid observer and $mme on
// b; with a principal, authorization is on through auth.Policy.
func start(t testing.TB, b storage.Backend, p *auth.Principal) *server {
	t.Helper()
	_, reg, tab := parts(t)
	return &server{env.Start(t, b, func(cfg *fhir.Config) {
		cfg.Observers = []fhir.CommitObserver{opioidsafety.NewObserver(tab, nil)}
		cfg.PatientOperations = []fhir.PatientOperation{opioidsafety.MMEOperation(tab)}
		if p != nil {
			cfg.Authorizer = auth.NewPolicy(reg)
			cfg.Middleware = fhirtest.WithPrincipal(p)
		}
	})}
}

// do sends a request to path under the server root ("/fhir/Patient/1").
func (s *server) do(t testing.TB, method, path, body string, hdr ...string) fhirtest.Response {
	t.Helper()
	return s.Do(t, method, s.Root+path, body, hdr...)
}

func get(v any, path ...any) any { return fhirtest.Get(v, path...) }
