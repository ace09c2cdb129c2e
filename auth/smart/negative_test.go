package smart_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/anodyne-fhir/anodyne/auth/smart"
)

func TestAuthorizeAndTokenNegatives(t *testing.T) {
	e := newEnv(t)
	e.addClient(smart.Client{ID: "app", Type: smart.ClientPublic, RedirectURIs: []string{redirect}, Scopes: "launch/patient patient/*.rs"}, "")
	e.addAccount("alice", "Patient/a")
	app := e.app("app", redirect, "launch/patient", "patient/Observation.rs")
	v := oauth2.GenerateVerifier()
	aud := oauth2.SetAuthURLParam("aud", e.fhirBase)
	pkce := oauth2.S256ChallengeOption(v)

	t.Run("authorize errors redirect with state", func(t *testing.T) {
		for _, c := range []struct {
			name string
			opts []oauth2.AuthCodeOption
			err  string
		}{
			{"bad aud", []oauth2.AuthCodeOption{pkce, oauth2.SetAuthURLParam("aud", "https://other.example/fhir")}, "invalid_request"},
			{"missing aud", []oauth2.AuthCodeOption{pkce}, "invalid_request"},
			{"missing PKCE", []oauth2.AuthCodeOption{aud}, "invalid_request"},
			{"plain PKCE", []oauth2.AuthCodeOption{aud, oauth2.SetAuthURLParam("code_challenge", v), oauth2.SetAuthURLParam("code_challenge_method", "plain")}, "invalid_request"},
			{"no grantable scope", []oauth2.AuthCodeOption{aud, pkce, oauth2.SetAuthURLParam("scope", "user/*.cruds patient/Observation.sr")}, "invalid_scope"},
			{"response_type token", []oauth2.AuthCodeOption{aud, pkce, oauth2.SetAuthURLParam("response_type", "token")}, "unsupported_response_type"},
		} {
			t.Run(c.name, func(t *testing.T) {
				p := newBrowser(t, redirect).get(app.AuthCodeURL("st", c.opts...))
				q, err := codeFrom(t, p)
				if err == nil || q.Get("error") != c.err || q.Get("state") != "st" || q.Get("code") != "" {
					t.Errorf("got %v (%v), want error %s with state", q, err, c.err)
				}
			})
		}
	})
	t.Run("missing state", func(t *testing.T) {
		p := newBrowser(t, redirect).get(app.AuthCodeURL("", aud, pkce))
		q, err := codeFrom(t, p)
		if err == nil || q.Get("error") != "invalid_request" || q.Get("code") != "" {
			t.Errorf("authorize without state: %v (%v), want invalid_request", q, err)
		}
	})
	t.Run("unregistered redirect_uri is never redirected to", func(t *testing.T) {
		bad := *app
		bad.RedirectURL = "https://evil.example/cb"
		p := newBrowser(t, "https://evil.example/").get(bad.AuthCodeURL("st", aud, pkce))
		if p.loc != "" || p.status != http.StatusBadRequest {
			t.Errorf("= %d, Location %q", p.status, p.loc)
		}
		other := *app
		other.ClientID = "nobody"
		if p := newBrowser(t, redirect).get(other.AuthCodeURL("st", aud, pkce)); p.loc != "" || p.status != http.StatusBadRequest {
			t.Errorf("unknown client = %d %q", p.status, p.loc)
		}
	})
	t.Run("wrong password stays on the login page", func(t *testing.T) {
		b := newBrowser(t, redirect)
		p := b.get(app.AuthCodeURL("st", aud, pkce))
		p = b.submit(p, url.Values{"username": {"alice"}, "password": {"wrong password!"}})
		if p.status != http.StatusUnauthorized || !strings.Contains(p.body, "wrong password") {
			t.Errorf("= %d", p.status)
		}
	})
	t.Run("CSRF token must match the cookie", func(t *testing.T) {
		b := newBrowser(t, redirect)
		p := b.get(app.AuthCodeURL("st", aud, pkce))
		p2 := b.submit(p, url.Values{"username": {"alice"}, "password": {"correct horse battery"}, "csrf": {"forged"}})
		if p2.status != http.StatusBadRequest || p2.loc != "" {
			t.Errorf("forged csrf = %d", p2.status)
		}
		// Another browser (no cookie) with the right hidden fields fails too.
		p3 := newBrowser(t, redirect).submit(p, url.Values{"username": {"alice"}, "password": {"correct horse battery"}})
		if p3.status != http.StatusBadRequest {
			t.Errorf("form replayed from another browser = %d", p3.status)
		}
	})
	t.Run("user denies consent", func(t *testing.T) {
		b := newBrowser(t, redirect)
		p := b.get(app.AuthCodeURL("st", aud, pkce))
		p = b.submit(p, url.Values{"username": {"alice"}, "password": {"correct horse battery"}})
		p = b.submit(p, url.Values{"decision": {"deny"}})
		if q, err := codeFrom(t, p); err == nil || q.Get("error") != "access_denied" {
			t.Errorf("deny = %v %v", q, err)
		}
	})

	code := func() string {
		q, err := codeFrom(t, loginAs(t, newBrowser(t, redirect), app.AuthCodeURL("st", aud, pkce), "alice", ""))
		if err != nil {
			t.Fatal(err)
		}
		return q.Get("code")
	}
	exchange := func(f url.Values) (int, map[string]any) {
		st, body, _ := e.postForm("/auth/token", f, nil)
		return st, body
	}
	base := func(c string) url.Values {
		return url.Values{"grant_type": {"authorization_code"}, "code": {c}, "redirect_uri": {redirect}, "client_id": {"app"}, "code_verifier": {v}}
	}
	t.Run("PKCE verifier variants", func(t *testing.T) {
		for _, c := range []struct {
			name     string
			verifier *string
		}{
			{"missing", nil},
			{"blank", ptr("")},
			{"wrong", ptr(oauth2.GenerateVerifier())},
			{"plain (the challenge itself)", ptr(s256(v))},
		} {
			f := base(code())
			if c.verifier == nil {
				f.Del("code_verifier")
			} else {
				f.Set("code_verifier", *c.verifier)
			}
			if st, body := exchange(f); st != http.StatusBadRequest || body["access_token"] != nil {
				t.Errorf("%s verifier = %d %v", c.name, st, body)
			}
		}
	})
	t.Run("code is single-use and bound", func(t *testing.T) {
		c := code()
		if st, body := exchange(base(c)); st != 200 {
			t.Fatalf("first exchange = %d %v", st, body)
		}
		if st, body := exchange(base(c)); st != 400 || body["error"] != "invalid_grant" {
			t.Errorf("reused code = %d %v", st, body)
		}
		f := base(code())
		f.Set("redirect_uri", redirect+"/other")
		if st, _ := exchange(f); st != 400 {
			t.Errorf("other redirect_uri = %d", st)
		}
		if st, body := exchange(base("not-a-code")); st != 400 || body["error"] != "invalid_grant" {
			t.Errorf("bad code = %d %v", st, body)
		}
		f = base(code())
		f.Set("client_id", "nobody")
		if st, body := exchange(f); st != 401 || body["error"] != "invalid_client" {
			t.Errorf("unknown client = %d %v", st, body)
		}
	})
}

func ptr(s string) *string { return &s }

// ourKey reads the active signing key from the store, to forge tokens
// that differ from good ones in exactly one respect.
func ourKey(t *testing.T, e *env) *jose.JSONWebKey {
	t.Helper()
	ctx := context.Background()
	kid, err := e.kv.Get(ctx, "auth/key-active")
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.kv.Get(ctx, "auth/key/"+string(kid))
	if err != nil {
		t.Fatal(err)
	}
	var k jose.JSONWebKey
	if err := json.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	return &k
}

func signWith(t *testing.T, k *jose.JSONWebKey, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := json.Marshal(claims)
	jws, err := s.Sign(p)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

func TestResourceServerRefusesBadTokens(t *testing.T) {
	e := newEnv(t)
	e.seed()
	s := newSigner(t, jose.ES384)
	e.addClient(smart.Client{ID: "svc", Type: smart.ClientAsymmetric, JWKS: s.jwks(), Scopes: "system/*.rs"}, "")
	good := e.backendToken("svc", s, "system/*.rs")
	if st, _, _ := e.fhirDo(http.MethodGet, "/Patient/a", good, nil); st != 200 {
		t.Fatalf("good token = %d", st)
	}
	k := ourKey(t, e)
	now := time.Now()
	claims := func(mut func(map[string]any)) map[string]any {
		c := map[string]any{"iss": e.base, "sub": "svc", "aud": e.fhirBase, "exp": now.Add(time.Minute).Unix(), "iat": now.Unix(), "client_id": "svc", "scope": "system/*.rs", "jti": "x"}
		mut(c)
		return c
	}
	stranger, _ := smartKey(t)
	tampered := good[:len(good)-6] + flip(good[len(good)-6:])
	cases := []struct{ name, token string }{
		{"no token", ""},
		{"garbage", "not.a.token"},
		{"tampered signature", tampered},
		{"expired", signWith(t, k, claims(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() }))},
		{"wrong audience", signWith(t, k, claims(func(c map[string]any) { c["aud"] = "https://other.example/fhir" }))},
		{"wrong issuer", signWith(t, k, claims(func(c map[string]any) { c["iss"] = "https://evil.example" }))},
		{"signed by a stranger", signWith(t, stranger, claims(func(map[string]any) {}))},
		// Well signed and in date, but never issued (no record): treated as revoked.
		{"never issued", signWith(t, k, claims(func(map[string]any) {}))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, body, hdr := e.fhirDo(http.MethodGet, "/Patient/a", c.token, nil)
			if st != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("= %d %q", st, hdr.Get("WWW-Authenticate"))
			}
			if body["resourceType"] != "OperationOutcome" || body["id"] == "a" {
				t.Errorf("body %v", body)
			}
		})
	}
	// Revocation takes effect on the resource server at once.
	if st, _, _ := e.postForm("/auth/revoke", url.Values{"token": {good}, "client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {s.assertion(t, "svc", e.base+"/auth/token", nil, nil)}}, nil); st != 200 {
		t.Fatalf("revoke = %d", st)
	}
	if st, _, _ := e.fhirDo(http.MethodGet, "/Patient/a", good, nil); st != http.StatusUnauthorized {
		t.Errorf("revoked token = %d", st)
	}
}

func smartKey(t *testing.T) (*jose.JSONWebKey, error) {
	s := newSigner(t, jose.RS384)
	return &jose.JSONWebKey{Key: s.key, KeyID: "stranger"}, nil
}
