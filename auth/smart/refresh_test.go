package smart_test

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"testing"

	"github.com/anodyne-fhir/anodyne/auth/smart"
	"golang.org/x/oauth2"
)

// offlineToken runs a real authorization-code flow for a patient user and
// returns the token response (access and refresh token).
func offlineToken(t *testing.T, e *env, clientID string, scopes ...string) *oauth2.Token {
	t.Helper()
	app := e.app(clientID, redirect, scopes...)
	v := oauth2.GenerateVerifier()
	q, err := codeFrom(t, loginAs(t, newBrowser(t, redirect), app.AuthCodeURL("s", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("aud", e.fhirBase)), "alice", ""))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := app.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token")
	}
	return tok
}

func refreshEnv(t *testing.T) *env {
	e := newEnv(t)
	for _, id := range []string{"app", "other"} {
		e.addClient(smart.Client{ID: id, Type: smart.ClientPublic, RedirectURIs: []string{redirect},
			Scopes: "openid fhirUser launch/patient patient/*.rs patient/*.read offline_access"}, "")
	}
	e.addAccount("alice", "Patient/a")
	return e
}

// A refused refresh (wrong scope, wrong client) must leave the refresh
// token usable; scope narrowing is semantic, not literal.
func TestRefusedRefreshKeepsToken(t *testing.T) {
	e := refreshEnv(t)
	tok := offlineToken(t, e, "app", "launch/patient", "patient/*.rs", "patient/*.read", "offline_access")
	refresh := func(rt, client, scope string) (int, map[string]any) {
		f := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {client}}
		if scope != "" {
			f.Set("scope", scope)
		}
		st, body, _ := e.postForm("/auth/token", f, nil)
		return st, body
	}
	rt := tok.RefreshToken
	if st, b := refresh(rt, "app", "patient/*.cruds"); st != 400 || b["error"] != "invalid_scope" {
		t.Fatalf("wider scope = %d %v", st, b)
	}
	if st, b := refresh(rt, "app", "user/Observation.rs"); st != 400 || b["error"] != "invalid_scope" {
		t.Fatalf("other context = %d %v", st, b)
	}
	if st, b := refresh(rt, "other", ""); st != 400 || b["error"] != "invalid_grant" {
		t.Fatalf("other client = %d %v", st, b)
	}
	for _, sc := range []string{"patient/Observation.rs", "patient/Observation.r patient/Patient.read", "launch/patient patient/Condition.read offline_access"} {
		st, b := refresh(rt, "app", sc)
		if st != 200 || b["scope"] != sc || b["patient"] != "a" {
			t.Fatalf("semantic subset %q after refused refreshes = %d %v", sc, st, b)
		}
		rt = b["refresh_token"].(string)
	}
	// Rotation stays atomic: of concurrent refreshes of one token exactly one wins.
	const n = 8
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, _ := refresh(rt, "app", "")
			codes <- st
		}()
	}
	wg.Wait()
	close(codes)
	ok := 0
	for st := range codes {
		switch st {
		case 200:
			ok++
		case 400:
		default:
			t.Errorf("concurrent refresh = %d", st)
		}
	}
	if ok != 1 {
		t.Errorf("%d concurrent refreshes of one token succeeded, want 1", ok)
	}
}

// fhirclient's default refresh: a form with grant_type and refresh_token
// only, no client_id and no client authentication.
func TestPublicRefreshWithoutClientID(t *testing.T) {
	e := refreshEnv(t)
	secret := e.addClient(smart.Client{ID: "conf", Type: smart.ClientSymmetric, RedirectURIs: []string{redirect},
		Scopes: "launch/patient patient/*.rs offline_access"}, "")
	tok := offlineToken(t, e, "app", "launch/patient", "patient/*.rs", "offline_access")
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}}
	st, body, _ := e.postForm("/auth/token", form, nil)
	if st != 200 || body["access_token"] == nil || body["refresh_token"] == nil || body["patient"] != "a" {
		t.Fatalf("public refresh without client_id = %d %v", st, body)
	}
	if st, _, _ := e.fhirDo(http.MethodGet, "/Observation", body["access_token"].(string), nil); st != 200 {
		t.Errorf("refreshed token on the API = %d", st)
	}

	// A confidential client's refresh token still needs the client's credentials.
	capp := &oauth2.Config{ClientID: "conf", ClientSecret: secret, RedirectURL: redirect,
		Scopes:   []string{"launch/patient", "patient/*.rs", "offline_access"},
		Endpoint: oauth2.Endpoint{AuthURL: e.base + "/auth/authorize", TokenURL: e.base + "/auth/token", AuthStyle: oauth2.AuthStyleInHeader}}
	v := oauth2.GenerateVerifier()
	q, err := codeFrom(t, loginAs(t, newBrowser(t, redirect), capp.AuthCodeURL("s", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("aud", e.fhirBase)), "alice", ""))
	if err != nil {
		t.Fatal(err)
	}
	ctok, err := capp.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	bare := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {ctok.RefreshToken}}
	if st, b, _ := e.postForm("/auth/token", bare, nil); st != 401 || b["error"] != "invalid_client" {
		t.Errorf("confidential refresh without authentication = %d %v", st, b)
	}
	basic := http.Header{"Authorization": {"Basic " + basicAuth("conf", secret)}}
	if st, b, _ := e.postForm("/auth/token", bare, basic); st != 200 {
		t.Errorf("confidential refresh with authentication after a refused one = %d %v", st, b)
	}
}

// RFC 7009 2.1: revoking a refresh token revokes the access tokens of its grant.
func TestRevokedRefreshTokenRevokesAccessTokens(t *testing.T) {
	e := refreshEnv(t)
	tok := offlineToken(t, e, "app", "launch/patient", "patient/*.rs", "offline_access")
	st, b, _ := e.postForm("/auth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {"app"}}, nil)
	if st != 200 {
		t.Fatalf("refresh = %d %v", st, b)
	}
	access := []string{tok.AccessToken, b["access_token"].(string)}
	other := offlineToken(t, e, "app", "launch/patient", "patient/*.rs", "offline_access")
	for _, at := range append(access, other.AccessToken) {
		if st, _, _ := e.fhirDo(http.MethodGet, "/Observation", at, nil); st != 200 {
			t.Fatalf("before revocation = %d", st)
		}
	}
	if st, _, _ := e.postForm("/auth/revoke", url.Values{"token": {b["refresh_token"].(string)}, "client_id": {"app"}}, nil); st != 200 {
		t.Fatalf("revoke = %d", st)
	}
	for i, at := range access {
		if st, _, _ := e.fhirDo(http.MethodGet, "/Observation", at, nil); st != 401 {
			t.Errorf("access token %d of the revoked grant on the API = %d, want 401", i, st)
		}
	}
	// Another grant of the same client and user is untouched.
	if st, _, _ := e.fhirDo(http.MethodGet, "/Observation", other.AccessToken, nil); st != 200 {
		t.Errorf("access token of another grant = %d, want 200", st)
	}
}

// Introspection reveals a token only to its own client or to a registered
// resource server.
func TestIntrospectionIsRestricted(t *testing.T) {
	e := refreshEnv(t)
	rsSecret := e.addClient(smart.Client{ID: "rs", Type: smart.ClientSymmetric, ResourceServer: true}, "")
	plainSecret := e.addClient(smart.Client{ID: "plain", Type: smart.ClientSymmetric, RedirectURIs: []string{redirect}, Scopes: "launch/patient patient/*.rs"}, "")
	victim := offlineToken(t, e, "app", "openid", "fhirUser", "launch/patient", "patient/*.rs", "offline_access")
	attacker := offlineToken(t, e, "other", "launch/patient", "patient/*.rs", "offline_access")
	bearer := func(tk string) http.Header { return http.Header{"Authorization": {"Bearer " + tk}} }
	cases := []struct {
		name   string
		hdr    http.Header
		form   url.Values
		active bool
	}{
		{"own bearer", bearer(victim.AccessToken), nil, true},
		{"own public client_id", nil, url.Values{"client_id": {"app"}}, true},
		{"resource server", http.Header{"Authorization": {"Basic " + basicAuth("rs", rsSecret)}}, nil, true},
		{"another app's bearer", bearer(attacker.AccessToken), nil, false},
		{"another public client_id", nil, url.Values{"client_id": {"other"}}, false},
		{"confidential client, not a resource server", http.Header{"Authorization": {"Basic " + basicAuth("plain", plainSecret)}}, nil, false},
	}
	for _, tc := range cases {
		for _, tk := range []string{victim.AccessToken, victim.RefreshToken} {
			f := url.Values{"token": {tk}}
			for k, v := range tc.form {
				f[k] = v
			}
			st, body, _ := e.postForm("/auth/introspect", f, tc.hdr)
			if tc.active {
				if st != 200 || body["active"] != true || body["patient"] != "a" {
					t.Errorf("%s: %d %v, want active", tc.name, st, body)
				}
				continue
			}
			if st != 200 || len(body) != 1 || body["active"] != false {
				t.Errorf("%s: %d %v, want only {\"active\":false}", tc.name, st, body)
			}
		}
	}
}
