package fhirtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/auth/audit"
	"github.com/anodyne-fhir/anodyne/auth/smart"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Auth is the built-in SMART authorization server of a server started by
// StartSMART. Its clients get real signed tokens over real HTTP, and the
// FHIR API verifies them as anodyne serve does.
type Auth struct {
	AS  *smart.Server
	srv *Server
}

// StartSMART runs the real server over b as Start does, with authorization
// on as anodyne serve wires it: the built-in SMART authorization server
// mounted beside the API, every FHIR request verified by auth.Verifier
// (tokens of that server only), judged by auth.Policy, and recorded by the
// audit middleware as AuditEvents in b. mod runs after that wiring.
func (e *Env) StartSMART(t testing.TB, b storage.Backend, mod func(*fhir.Config)) (*Server, *Auth) {
	t.Helper()
	_, reg := e.Parts(t)
	var as *smart.Server
	srv := e.start(t, b, func(cfg *fhir.Config) {
		ctx := context.Background()
		sink := audit.New(b, reg)
		var err error
		as, err = smart.New(ctx, smart.Config{BaseURL: cfg.BaseURL, FHIRBase: cfg.BaseURL + "/fhir", KV: b.KV(), Logger: cfg.Logger, Audit: sink})
		if err != nil {
			t.Fatalf("smart.New: %v", err)
		}
		ver, err := auth.NewVerifier(ctx, cfg.Logger, as.TrustedIssuer())
		if err != nil {
			t.Fatalf("auth.NewVerifier: %v", err)
		}
		authn := ver.Middleware(cfg.BaseURL, nil)
		record := auth.AuditMiddleware(sink, cfg.BaseURL+"/fhir", "/fhir", cfg.Logger)
		cfg.Authorizer = auth.NewPolicy(reg)
		cfg.Security = as.SecurityComponent()
		// Verify first, so that the audit record knows who called.
		cfg.Middleware = func(next echo.HandlerFunc) echo.HandlerFunc { return authn(record(next)) }
		if mod != nil {
			mod(cfg)
		}
	}, func(e *echo.Echo) {
		e.Pre(as.CORS())
		as.Register(e)
	})
	return srv, &Auth{AS: as, srv: srv}
}

// BackendClient is a registered SMART Backend Services client
// (confidential-asymmetric, private_key_jwt with an ES384 key).
type BackendClient struct {
	ID     string
	scopes string // registered
	auth   *Auth
	key    *ecdsa.PrivateKey
	kid    string

	mu     sync.Mutex
	tokens map[string]cachedToken // by requested scope
}

type cachedToken struct {
	raw     string
	expires time.Time
}

// BackendClient registers c as a backend-services client with a fresh
// key (c.Type and c.JWKS are set here; c.Scopes is its pre-authorisation,
// c.ResearchProject and c.ResearchAccess make it a research client).
func (a *Auth) BackendClient(t testing.TB, c smart.Client) *BackendClient {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatalf("client key: %v", err)
	}
	kid := c.ID + "-" + randomHex(4)
	set, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: kid, Algorithm: string(jose.ES384), Use: "sig"}}})
	if err != nil {
		t.Fatalf("client JWKS: %v", err)
	}
	c.Type, c.JWKS = smart.ClientAsymmetric, set
	if _, err := smart.RegisterClient(context.Background(), a.AS.Clients(), &c, ""); err != nil {
		t.Fatalf("registering client %s: %v", c.ID, err)
	}
	return &BackendClient{ID: c.ID, scopes: c.Scopes, auth: a, key: key, kid: kid, tokens: map[string]cachedToken{}}
}

// Token returns an access token for scope ("" asks for the registered
// scopes; the token endpoint requires a scope) from the token endpoint's client_credentials grant, authenticated
// by a signed assertion; it is reused until shortly before it expires.
func (bc *BackendClient) Token(t testing.TB, scope string) string {
	t.Helper()
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if c, ok := bc.tokens[scope]; ok && time.Now().Before(c.expires) {
		return c.raw
	}
	tokenURL := bc.auth.AS.Issuer() + "/auth/token"
	assertion, err := bc.assertion(tokenURL)
	if err != nil {
		t.Fatalf("client %s assertion: %v", bc.ID, err)
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
	}
	if scope == "" {
		form.Set("scope", bc.scopes)
	} else {
		form.Set("scope", scope)
	}
	res, err := bc.auth.srv.Client.Post(tokenURL, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatalf("client %s token request: %v", bc.ID, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var body struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if res.StatusCode != http.StatusOK || json.Unmarshal(raw, &body) != nil || body.AccessToken == "" {
		t.Fatalf("client %s token: %d %s", bc.ID, res.StatusCode, raw)
	}
	// A margin, so that a token never expires between here and its use.
	bc.tokens[scope] = cachedToken{raw: body.AccessToken, expires: time.Now().Add(time.Duration(body.ExpiresIn)*time.Second - 30*time.Second)}
	return body.AccessToken
}

// Bearer is the Authorization header of Token(scope) for Server.Do.
func (bc *BackendClient) Bearer(t testing.TB, scope string) string {
	t.Helper()
	return "Authorization: Bearer " + bc.Token(t, scope)
}

// assertion is a client authentication JWT (SMART Backend Services:
// iss = sub = client id, aud = token URL, a few minutes, a fresh jti).
func (bc *BackendClient) assertion(aud string) (string, error) {
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES384, Key: bc.key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", bc.kid))
	if err != nil {
		return "", fmt.Errorf("signer: %w", err)
	}
	now := time.Now()
	claims, err := json.Marshal(map[string]any{"iss": bc.ID, "sub": bc.ID, "aud": aud, "iat": now.Unix(),
		"exp": now.Add(4 * time.Minute).Unix(), "jti": randomHex(12)})
	if err != nil {
		return "", err
	}
	jws, err := sg.Sign(claims)
	if err != nil {
		return "", fmt.Errorf("signing: %w", err)
	}
	return jws.CompactSerialize()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
