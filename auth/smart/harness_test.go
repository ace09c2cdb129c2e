package smart_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/labstack/echo/v4"
	"golang.org/x/oauth2"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/auth/audit"
	"github.com/anodyne-fhir/anodyne/auth/smart"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// env is the real server: the FHIR REST layer on SQLite, protected by the
// auth middleware and decision point, with the built-in SMART server
// mounted on the same Echo, over real HTTP.
type env struct {
	t        testing.TB
	srv      *httptest.Server
	as       *smart.Server
	kv       storage.KV
	be       storage.Backend
	base     string
	fhirBase string
}

var (
	regOnce sync.Once
	reg     *resources.Registry
	regErr  error
)

func registry(t testing.TB) *resources.Registry {
	regOnce.Do(func() { reg, regErr = resources.Load() })
	if regErr != nil {
		t.Fatal(regErr)
	}
	return reg
}

type envOption func(*envConfig)

// envConfig is what options may change: the SMART server's configuration
// and whether (and how) FHIR requests are audited.
type envConfig struct {
	smart.Config
	noAudit bool
	// groupAudit stores audit events through audit.GroupCommit (as the
	// real server does) instead of one Commit per request.
	groupAudit bool
	// wrapSink, when set, wraps the audit sink (to observe what reaches it).
	wrapSink func(auth.AuditSink) auth.AuditSink
}

// quiet keeps warnings and errors only, so that test output stays readable.
var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	ctx := context.Background()
	be, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	// The base URL must be known before the servers are built: take the
	// listener first, then install the handler.
	srv := httptest.NewUnstartedServer(nil)
	base := "http://" + srv.Listener.Addr().String()
	ec := envConfig{Config: smart.Config{BaseURL: base, FHIRBase: base + "/fhir", KV: be.KV(), AdminToken: "admin-secret-token"}}
	for _, o := range opts {
		o(&ec)
	}
	var sink auth.AuditSink = audit.New(be, registry(t))
	if ec.groupAudit {
		g := audit.NewGroupCommit(be, registry(t), quiet)
		t.Cleanup(func() { g.Close() })
		sink = g
	}
	if ec.wrapSink != nil {
		sink = ec.wrapSink(sink)
	}
	cfg := ec.Config
	cfg.Logger = quiet
	if !ec.noAudit && cfg.Audit == nil {
		cfg.Audit = sink // account lock-outs go to the same sink
	}
	as, err := smart.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ver, err := auth.NewVerifier(ctx, quiet, as.TrustedIssuer())
	if err != nil {
		t.Fatal(err)
	}
	fs, err := fhir.New(fhir.Config{
		BaseURL:    base,
		Backend:    be,
		Registry:   registry(t),
		Authorizer: auth.NewPolicy(registry(t)),
		Middleware: func(next echo.HandlerFunc) echo.HandlerFunc {
			if ec.noAudit {
				return ver.Middleware(base, nil)(next)
			}
			// Verify first, so that the audit record knows who called.
			return ver.Middleware(base, nil)(auth.AuditMiddleware(sink, base+"/fhir", "/fhir", quiet)(next))
		},
		Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := fs.Echo()
	e.Pre(as.CORS())
	as.Register(e)
	srv.Config.Handler = e
	srv.Start()
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, as: as, kv: be.KV(), be: be, base: base, fhirBase: base + "/fhir"}
}

func (e *env) addClient(c smart.Client, secret string) string {
	e.t.Helper()
	s, err := smart.RegisterClient(context.Background(), e.as.Clients(), &c, secret)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *env) addAccount(user, fhirUser string, patients ...string) {
	e.t.Helper()
	err := e.as.PutAccount(context.Background(), smart.Account{Username: user, FHIRUser: fhirUser, Patients: patients}, "correct horse battery")
	if err != nil {
		e.t.Fatal(err)
	}
}

// signer is a backend-services client key.
type signer struct {
	alg jose.SignatureAlgorithm
	key crypto.Signer
	kid string
}

func newSigner(t testing.TB, alg jose.SignatureAlgorithm) *signer {
	var k crypto.Signer
	var err error
	switch alg {
	case jose.RS384:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES384:
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &signer{alg: alg, key: k, kid: string(alg) + "-" + randHex(4)}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func (s *signer) jwks() json.RawMessage {
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: s.key.Public(), KeyID: s.kid, Algorithm: string(s.alg), Use: "sig"}}})
	return b
}

// assertion builds a client assertion; mutate may change the claims.
func (s *signer) assertion(t testing.TB, clientID, aud string, mutate func(map[string]any), headers map[jose.HeaderKey]any) string {
	t.Helper()
	now := time.Now()
	claims := map[string]any{"iss": clientID, "sub": clientID, "aud": aud, "exp": now.Add(4 * time.Minute).Unix(), "iat": now.Unix(), "jti": randHex(12)}
	if mutate != nil {
		mutate(claims)
	}
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", s.kid)
	for k, v := range headers {
		opts = opts.WithHeader(k, v)
	}
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: s.alg, Key: s.key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := sg.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// postForm posts a form and decodes the JSON answer.
func (e *env) postForm(path string, form url.Values, hdr http.Header) (int, map[string]any, http.Header) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(body) > 0 {
		if err := json.Unmarshal(body, &m); err != nil {
			e.t.Fatalf("POST %s: %d %s", path, resp.StatusCode, body)
		}
	}
	return resp.StatusCode, m, resp.Header
}

// backendToken runs SMART backend services and returns the access token.
func (e *env) backendToken(clientID string, s *signer, scope string) string {
	e.t.Helper()
	st, body, _ := e.postForm("/auth/token", url.Values{
		"grant_type": {"client_credentials"}, "scope": {scope},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {s.assertion(e.t, clientID, e.base+"/auth/token", nil, nil)},
	}, nil)
	if st != http.StatusOK {
		e.t.Fatalf("client_credentials: %d %v", st, body)
	}
	return body["access_token"].(string)
}

// fhirDo calls the FHIR API with a token and decodes the JSON answer.
func (e *env) fhirDo(method, path, token string, body any) (int, map[string]any, http.Header) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.fhirBase+path, rd)
	req.Header.Set("Accept", "application/fhir+json")
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 {
		_ = json.Unmarshal(b, &m)
	}
	return resp.StatusCode, m, resp.Header
}

// bundleIDs lists "Type/id" of the entries of a Bundle.
func bundleIDs(b map[string]any) []string {
	var out []string
	entries, _ := b["entry"].([]any)
	for _, en := range entries {
		r, _ := en.(map[string]any)["resource"].(map[string]any)
		if r == nil {
			continue
		}
		out = append(out, fmt.Sprintf("%s/%s", r["resourceType"], r["id"]))
	}
	return out
}

// seed writes a small world through the FHIR API with a system token:
// patients a and b, vital-sign and lab observations, conditions.
func (e *env) seed() {
	e.t.Helper()
	s := newSigner(e.t, jose.ES384)
	e.addClient(smart.Client{ID: "seeder", Type: smart.ClientAsymmetric, JWKS: s.jwks(), Scopes: "system/*.cruds"}, "")
	tok := e.backendToken("seeder", s, "system/*.cruds")
	cat := func(code string) []any {
		return []any{map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": code}}}}
	}
	res := []map[string]any{
		{"resourceType": "Patient", "id": "a", "name": []any{map[string]any{"family": "Alpha"}}},
		{"resourceType": "Patient", "id": "b", "name": []any{map[string]any{"family": "Beta"}}},
		{"resourceType": "Observation", "id": "a-vital", "status": "final", "subject": map[string]any{"reference": "Patient/a"}, "category": cat("vital-signs"), "code": map[string]any{"text": "pain"}},
		{"resourceType": "Observation", "id": "a-lab", "status": "final", "subject": map[string]any{"reference": "Patient/a"}, "category": cat("laboratory"), "code": map[string]any{"text": "creatinine"}},
		{"resourceType": "Observation", "id": "b-vital", "status": "final", "subject": map[string]any{"reference": "Patient/b"}, "category": cat("vital-signs"), "code": map[string]any{"text": "pain"}},
		{"resourceType": "Condition", "id": "a-cond", "subject": map[string]any{"reference": "Patient/a"}, "code": map[string]any{"text": "back pain"}},
	}
	for _, r := range res {
		st, body, _ := e.fhirDo(http.MethodPut, fmt.Sprintf("/%s/%s", r["resourceType"], r["id"]), tok, r)
		if st != http.StatusCreated && st != http.StatusOK {
			e.t.Fatalf("seed %s/%s: %d %v", r["resourceType"], r["id"], st, body)
		}
	}
}

// browser is a user agent without JavaScript: it follows redirects inside
// the server, fills the forms, and stops at the app's redirect URI.
type browser struct {
	t      testing.TB
	c      *http.Client
	stopAt string
}

func newBrowser(t testing.TB, redirectURI string) *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{t: t, stopAt: redirectURI}
	b.c = &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), b.stopAt) {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	return b
}

type page struct {
	status int
	url    *url.URL
	body   string
	loc    string // Location when stopped at the app
	header http.Header
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return page{status: resp.StatusCode, url: resp.Request.URL, body: string(body), loc: resp.Header.Get("Location"), header: resp.Header}
}

func (b *browser) get(u string) page {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	return b.do(req)
}

var (
	hiddenRe = regexp.MustCompile(`<input type="hidden" name="(\w+)" value="([^"]*)">`)
	scopeRe  = regexp.MustCompile(`name="scope" value="([^"]*)"`)
	formRe   = regexp.MustCompile(`<form method="post" action="([^"]*)">`)
	radioRe  = regexp.MustCompile(`name="patient" value="([^"]*)"`)
)

// submit posts the page's form with its hidden fields plus extra.
func (b *browser) submit(p page, extra url.Values) page {
	b.t.Helper()
	m := formRe.FindStringSubmatch(p.body)
	if m == nil {
		b.t.Fatalf("no form on %s (%d): %s", p.url, p.status, p.body)
	}
	form := url.Values{}
	for _, h := range hiddenRe.FindAllStringSubmatch(p.body, -1) {
		form.Set(h[1], html.UnescapeString(h[2]))
	}
	for k, v := range extra {
		form[k] = v
	}
	action, _ := p.url.Parse(html.UnescapeString(m[1]))
	req, _ := http.NewRequest(http.MethodPost, action.String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

func scopesOn(p page) []string {
	var out []string
	for _, m := range scopeRe.FindAllStringSubmatch(p.body, -1) {
		out = append(out, html.UnescapeString(m[1]))
	}
	return out
}

// approve grants every offered scope on the consent page.
func (b *browser) approve(p page) page {
	b.t.Helper()
	if !strings.Contains(p.body, "Allow access?") {
		b.t.Fatalf("expected the consent page, got %d %s", p.status, p.body)
	}
	return b.submit(p, url.Values{"scope": scopesOn(p), "decision": {"allow"}})
}

// codeFrom reads code and state from the final redirect to the app.
func codeFrom(t testing.TB, p page) (url.Values, error) {
	t.Helper()
	if p.loc == "" {
		return nil, fmt.Errorf("no redirect to the app: %d %s %s", p.status, p.url, p.body)
	}
	u, err := url.Parse(p.loc)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	if q.Get("error") != "" {
		return q, errors.New(q.Get("error") + ": " + q.Get("error_description"))
	}
	return q, nil
}

// app is a SMART app as an x/oauth2 client.
func (e *env) app(clientID, redirect string, scopes ...string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:    clientID,
		RedirectURL: redirect,
		Scopes:      scopes,
		Endpoint:    oauth2.Endpoint{AuthURL: e.base + "/auth/authorize", TokenURL: e.base + "/auth/token", AuthStyle: oauth2.AuthStyleInParams},
	}
}

func s256(v string) string {
	h := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
