package cdshooks_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/clinical/cdshooks"
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
	if env, err = fhirtest.NewEnv("cdshooks"); err != nil {
		panic(err)
	}
	code := m.Run()
	if err := env.Close(); err != nil {
		slog.Error("stopping FerretDB", "err", err)
	}
	os.Exit(code)
}

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

// issuer signs SMART access tokens for the FHIR server (fhirtest.Issuer),
// issued for Dr Smith to the CDS service's client (cdsServiceClient), as
// an EHR obtains the fhirAuthorization it hands the service.
type issuer struct{ *fhirtest.Issuer }

// cdsServiceClient is the CDS service's client id at the authorization
// server: fhirAuthorization.subject.
const cdsServiceClient = "opioid-cds"

func (is issuer) token(t testing.TB, aud, scope, patient string) string {
	t.Helper()
	claims := map[string]any{"sub": "dr-smith", "client_id": cdsServiceClient, "fhirUser": "Practitioner/dr-smith"}
	if patient != "" {
		claims["patient"] = patient
	}
	return is.Token(t, aud, scope, claims)
}

// cdsClient is an EHR calling the CDS service: it signs each call's JWT
// (ES384) with a key its JWKS (served over HTTP) publishes.
type cdsClient struct {
	iss  string
	key  *ecdsa.PrivateKey
	jwks string
}

func newCDSClient(t testing.TB) *cdsClient {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "ehr-1", Algorithm: string(jose.ES384), Use: "sig"}}}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(ts.Close)
	return &cdsClient{iss: "https://ehr.example.org", key: key, jwks: ts.URL}
}

// jwt is a CDS Hooks client JWT for aud; mod changes claims.
func (c *cdsClient) jwt(t testing.TB, aud string, mod func(map[string]any)) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES384, Key: c.key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "ehr-1"))
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"iss": c.iss, "sub": "ehr-client", "aud": aud, "exp": time.Now().Add(4 * time.Minute).Unix(),
		"iat": time.Now().Unix(), "jti": uuid.NewString()}
	if mod != nil {
		mod(claims)
	}
	raw, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// world is a FHIR server with authorization on (real signed tokens,
// auth.Policy) and the CDS service mounted on it, plus a second CDS
// service elsewhere that only reaches the FHIR server over HTTP.
type world struct {
	root, fhirBase string // the FHIR server (and its own CDS service)
	remoteCDS      string // root of the CDS service with no FHIR of its own
	iss            issuer
	client         *cdsClient
	srv            *fhirtest.Server
	be             storage.Backend
	admin          string // a system/*.cruds token for seeding
}

func newWorld(t *testing.T, clientAuthOff bool) *world {
	t.Helper()
	return newWorldOn(t, env.Backends()[0].Open(t), clientAuthOff)
}

// newWorldOn starts the world over backend be.
func newWorldOn(t *testing.T, be storage.Backend, clientAuthOff bool) *world {
	t.Helper()
	_, reg, tab := parts(t)
	ctx := context.Background()
	w := &world{iss: issuer{fhirtest.NewIssuer(t, "https://sso.example.org")}, client: newCDSClient(t), be: be}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var ver *auth.Verifier
	w.srv = env.Start(t, be, func(cfg *fhir.Config) {
		ver = w.iss.Verifier(t, cfg.BaseURL+"/fhir")
		cfg.Authorizer = auth.NewPolicy(reg)
		cfg.Middleware = ver.Middleware(cfg.BaseURL, nil)
		cfg.Observers = []fhir.CommitObserver{opioidsafety.NewObserver(tab, log)}
	})
	w.root, w.fhirBase = w.srv.Root, w.srv.Base
	trusted := []cdshooks.TrustedClient{{Issuer: w.client.iss, JWKSURL: w.client.jwks}}
	svc, err := cdshooks.New(ctx, cdshooks.Config{
		BaseURL: w.root, FHIRBase: w.fhirBase, FHIR: w.srv.FHIR, Table: tab, Clients: trusted, ClientAuthOff: clientAuthOff,
		Replay: be.KV(), Logger: log,
		SelfAuth: func(ctx context.Context, tok string) (context.Context, error) {
			p, err := ver.Verify(ctx, tok)
			if err != nil {
				return nil, err
			}
			return auth.WithPrincipal(ctx, p), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Mounted before the first request reaches the server.
	svc.Register(w.srv.FHIR.Echo())

	// The same service on another host: fhirServer is remote to it.
	rts := httptest.NewUnstartedServer(nil)
	w.remoteCDS = "http://" + rts.Listener.Addr().String()
	remote, err := cdshooks.New(ctx, cdshooks.Config{BaseURL: w.remoteCDS, Table: tab, Clients: trusted, ClientAuthOff: clientAuthOff, Replay: be.KV(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	remote.Register(e)
	rts.Config.Handler = e
	rts.Start()
	t.Cleanup(rts.Close)

	w.admin = w.iss.token(t, w.fhirBase, "system/*.cruds", "")
	return w
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request to an absolute URL: a FHIR body as
// application/fhir+json, a CDS Hooks one as application/json.
func (w *world) do(t testing.TB, method, url, body, bearer string) response {
	t.Helper()
	var hdr []string
	if body != "" && !strings.Contains(url, "/fhir/") {
		hdr = append(hdr, "Content-Type: application/json")
	}
	if bearer != "" {
		hdr = append(hdr, "Authorization: Bearer "+bearer)
	}
	r := w.srv.Do(t, method, url, body, hdr...)
	return response{status: r.Status, header: r.Header, body: r.Body}
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
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("not a JSON object (%v): %q", err, r.body)
	}
	return m
}

// put stores a resource on the FHIR server.
func (w *world) put(t testing.TB, res map[string]any) {
	t.Helper()
	raw, _ := json.Marshal(res)
	r := w.do(t, "PUT", fmt.Sprintf("%s/%s/%s", w.fhirBase, res["resourceType"], res["id"]), string(raw), w.admin)
	if r.status != 200 && r.status != 201 {
		t.Fatalf("PUT %s/%s: %d %s", res["resourceType"], res["id"], r.status, r.body)
	}
}

// example reads a CDS Hooks spec example request from testdata.
func example(t testing.TB, name string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(raw))
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// call posts a hook request to a service root's opioid-mme with a fresh
// client JWT for that service.
func (w *world) call(t testing.TB, cdsRoot string, req map[string]any) response {
	t.Helper()
	raw, _ := json.Marshal(req)
	u := cdsRoot + "/cds-services/opioid-mme"
	return w.do(t, "POST", u, string(raw), w.client.jwt(t, u, nil))
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
