package cdshooks_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
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

	"github.com/coreos/go-oidc/v3/oidc"
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
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

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

// issuer signs SMART access tokens for the FHIR server (RS256).
type issuer struct {
	url string
	key *rsa.PrivateKey
}

func (is *issuer) token(t testing.TB, aud, scope, patient string) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: is.key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"iss": is.url, "sub": "dr-smith", "aud": aud, "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
		"scope": scope, "client_id": "ehr", "fhirUser": "Practitioner/dr-smith"}
	if patient != "" {
		claims["patient"] = patient
	}
	raw, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
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
	iss            *issuer
	client         *cdsClient
	hc             *http.Client
	admin          string // a system/*.cruds token for seeding
}

func newWorld(t *testing.T, clientAuthOff bool) *world {
	t.Helper()
	v, reg, tab := parts(t)
	ctx := context.Background()
	be, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(nil)
	root := "http://" + ts.Listener.Addr().String()
	w := &world{root: root, fhirBase: root + "/fhir", iss: &issuer{url: "https://sso.example.org", key: key}, client: newCDSClient(t), hc: &http.Client{Timeout: 30 * time.Second}}
	ver, err := auth.NewVerifier(ctx, nil, auth.TrustedIssuer{Issuer: w.iss.url, KeySet: &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{&key.PublicKey}}, Audience: w.fhirBase})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := fhir.New(fhir.Config{BaseURL: root, Backend: be, Validator: v, Registry: reg, Logger: log,
		Authorizer: auth.NewPolicy(reg), Middleware: ver.Middleware(root, nil),
		Observers: []fhir.CommitObserver{opioidsafety.NewObserver(tab, log)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	trusted := []cdshooks.TrustedClient{{Issuer: w.client.iss, JWKSURL: w.client.jwks}}
	svc, err := cdshooks.New(ctx, cdshooks.Config{
		BaseURL: root, FHIRBase: w.fhirBase, FHIR: srv, Table: tab, Clients: trusted, ClientAuthOff: clientAuthOff,
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
	svc.Register(srv.Echo())
	ts.Config.Handler = srv.Handler()
	ts.Start()
	t.Cleanup(ts.Close)

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

func (w *world) do(t testing.TB, method, url, body, bearer string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
		if strings.Contains(url, "/fhir/") {
			req.Header.Set("Content-Type", "application/fhir+json")
		}
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := w.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
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
