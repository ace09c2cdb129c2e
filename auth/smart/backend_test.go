package smart_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/anodyne-fhir/anodyne/auth/smart"
)

func TestBackendServices(t *testing.T) {
	e := newEnv(t)
	e.seed()
	tokenURL := e.base + "/auth/token"
	rs := newSigner(t, jose.RS384)
	es := newSigner(t, jose.ES384)
	e.addClient(smart.Client{ID: "hub-rs", Type: smart.ClientAsymmetric, JWKS: rs.jwks(), Scopes: "system/Observation.rs"}, "")

	// The ES384 client registers a JWKS URL served with cache headers.
	var fetches atomic.Int32
	jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(es.jwks())
	}))
	defer jwksSrv.Close()
	e.addClient(smart.Client{ID: "hub-es", Type: smart.ClientAsymmetric, JWKSURL: jwksSrv.URL + "/jwks.json", Scopes: "system/*.rs"}, "")

	form := func(client string, s *signer, mutate func(map[string]any), hdr map[jose.HeaderKey]any) url.Values {
		return url.Values{
			"grant_type": {"client_credentials"}, "scope": {"system/Observation.rs system/Patient.rs"},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
			"client_assertion":      {s.assertion(t, client, tokenURL, mutate, hdr)},
		}
	}
	for _, tc := range []struct {
		client string
		s      *signer
		scope  string
		obs    []string
		patOK  bool
	}{
		{"hub-rs", rs, "system/Observation.rs", []string{"Observation/a-lab", "Observation/a-vital", "Observation/b-vital"}, false},
		{"hub-es", es, "system/Observation.rs system/Patient.rs", []string{"Observation/a-lab", "Observation/a-vital", "Observation/b-vital"}, true},
	} {
		t.Run(string(tc.s.alg), func(t *testing.T) {
			st, body, hdr := e.postForm("/auth/token", form(tc.client, tc.s, nil, nil), nil)
			if st != 200 {
				t.Fatalf("token = %d %v", st, body)
			}
			if body["scope"] != tc.scope || body["token_type"] != "Bearer" || body["refresh_token"] != nil {
				t.Errorf("response %v", body)
			}
			if exp := body["expires_in"].(float64); exp <= 0 || exp > 300 {
				t.Errorf("expires_in = %v", exp)
			}
			if hdr.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q", hdr.Get("Cache-Control"))
			}
			tok := body["access_token"].(string)
			_, bundle, _ := e.fhirDo(http.MethodGet, "/Observation", tok, nil)
			got := bundleIDs(bundle)
			sort.Strings(got)
			if !slices.Equal(got, tc.obs) {
				t.Errorf("Observation = %v", got)
			}
			st, _, _ = e.fhirDo(http.MethodGet, "/Patient/a", tok, nil)
			if (st == 200) != tc.patOK {
				t.Errorf("read Patient = %d, allowed want %v", st, tc.patOK)
			}
			if st, _, _ := e.fhirDo(http.MethodPut, "/Patient/a", tok, map[string]any{"resourceType": "Patient", "id": "a"}); st != http.StatusForbidden {
				t.Errorf("update with a read-only scope = %d, want 403", st)
			}
		})
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("JWKS URL fetched %d times, want 1 (max-age=60)", n)
	}

	// Negative cases of the checklist: each must be refused.
	replay := form("hub-rs", rs, nil, nil)
	if st, b, _ := e.postForm("/auth/token", replay, nil); st != 200 {
		t.Fatalf("first use = %d %v", st, b)
	}
	wrongGrant := form("hub-rs", rs, nil, nil)
	wrongGrant.Set("grant_type", "password")
	badType := form("hub-rs", rs, nil, nil)
	badType.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
	tampered := form("hub-rs", rs, nil, nil)
	a := tampered.Get("client_assertion")
	tampered.Set("client_assertion", a[:len(a)-4]+flip(a[len(a)-4:]))
	other := newSigner(t, jose.RS384)
	other.kid = rs.kid // right kid, wrong key
	cases := []struct {
		name   string
		form   url.Values
		status int
		err    string
	}{
		{"replayed jti", replay, 401, "invalid_client"},
		{"wrong grant type", wrongGrant, 400, "unsupported_grant_type"},
		{"bad assertion type", badType, 401, "invalid_client"},
		{"tampered signature", tampered, 401, "invalid_client"},
		{"signed by another key", form("hub-rs", other, nil, nil), 401, "invalid_client"},
		{"aud is not the token URL", form("hub-rs", rs, func(c map[string]any) { c["aud"] = e.fhirBase }, nil), 401, "invalid_client"},
		{"exp too far ahead", form("hub-rs", rs, func(c map[string]any) { c["exp"] = time.Now().Add(time.Hour).Unix() }, nil), 401, "invalid_client"},
		{"expired", form("hub-rs", rs, func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() }, nil), 401, "invalid_client"},
		{"no jti", form("hub-rs", rs, func(c map[string]any) { delete(c, "jti") }, nil), 401, "invalid_client"},
		{"iss differs from sub", form("hub-rs", rs, func(c map[string]any) { c["sub"] = "someone" }, nil), 401, "invalid_client"},
		{"unknown client", form("nobody", rs, nil, nil), 401, "invalid_client"},
		{"jku not registered", form("hub-es", es, nil, map[jose.HeaderKey]any{"jku": "https://evil.example/jwks"}), 401, "invalid_client"},
		{"not a JWT", url.Values{"grant_type": {"client_credentials"}, "scope": {"system/*.rs"}, "client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {"abc.def"}}, 401, "invalid_client"},
		{"client_id contradicts the assertion", func() url.Values {
			f := form("hub-rs", rs, nil, nil)
			f.Set("client_id", "hub-es")
			return f
		}(), 401, "invalid_client"},
		{"scope not pre-authorised", func() url.Values {
			f := form("hub-rs", rs, nil, nil)
			f.Set("scope", "system/Patient.cruds")
			return f
		}(), 400, "invalid_scope"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, body, _ := e.postForm("/auth/token", c.form, nil)
			if st != c.status || body["error"] != c.err || body["access_token"] != nil {
				t.Errorf("= %d %v, want %d %s", st, body, c.status, c.err)
			}
		})
	}
	// RS256 is not an accepted assertion algorithm.
	rs256 := &signer{alg: jose.RS256, key: rs.key, kid: rs.kid}
	if st, body, _ := e.postForm("/auth/token", form("hub-rs", rs256, nil, nil), nil); st != 401 {
		t.Errorf("RS256 assertion = %d %v", st, body)
	}
}

// flip changes the last characters of a signature.
func flip(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
	}
	return string(b)
}
