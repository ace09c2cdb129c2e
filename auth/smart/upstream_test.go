package smart_test

import (
	"context"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	opstorage "github.com/zitadel/oidc/v3/example/server/storage"
	"golang.org/x/oauth2"

	"github.com/anodyne-fhir/anodyne/auth/smart"
)

var (
	upLinkRe = regexp.MustCompile(`<a href="([^"]*)">Sign in with`)
	upIDRe   = regexp.MustCompile(`name="id" value="([^"]*)"`)
)

// TestUpstreamEnterpriseLogin signs a user in through a real OpenID
// provider (zitadel/oidc's OP, run in-process) and maps them to a FHIR user.
func TestUpstreamEnterpriseLogin(t *testing.T) {
	up := httptest.NewUnstartedServer(nil)
	issuer := "http://" + up.Listener.Addr().String()
	clients := map[string]*opstorage.Client{}
	users := opstorage.NewUserStore(issuer)
	up.Config.Handler = exampleop.SetupServer(issuer, opstorage.NewStorageWithClients(users, clients), nil, false)
	up.Start()
	defer up.Close()

	e := newEnv(t, func(c *envConfig) {
		clients["anodyne"] = opstorage.WebClient("anodyne", "upstream-secret", c.BaseURL+"/auth/upstream/callback")
		c.Upstream = &smart.UpstreamOIDC{Name: "Hospital IdP", Issuer: issuer, ClientID: "anodyne", ClientSecret: "upstream-secret"}
	})
	e.seed()
	if err := e.as.LinkFederatedUser(context.Background(), issuer, "id1", smart.Account{FHIRUser: "Practitioner/p9", Patients: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	e.addClient(smart.Client{ID: "app", Type: smart.ClientPublic, RedirectURIs: []string{redirect}, Scopes: "openid fhirUser launch/patient patient/*.rs"}, "")
	app := e.app("app", redirect, "openid", "fhirUser", "launch/patient", "patient/Observation.rs")

	signIn := func(user string) (page, string) {
		v := oauth2.GenerateVerifier()
		b := newBrowser(t, redirect)
		p := b.get(app.AuthCodeURL("up-state", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("aud", e.fhirBase)))
		m := upLinkRe.FindStringSubmatch(p.body)
		if m == nil {
			t.Fatalf("no upstream link on the login page: %s", p.body)
		}
		link, _ := p.url.Parse(html.UnescapeString(m[1]))
		p = b.get(link.String())
		if !strings.HasPrefix(p.url.String(), issuer) {
			t.Fatalf("not at the upstream provider: %s", p.url)
		}
		id := upIDRe.FindStringSubmatch(p.body)
		if id == nil {
			t.Fatalf("no upstream login form: %s", p.body)
		}
		req, _ := http.NewRequest(http.MethodPost, issuer+"/login/username", strings.NewReader(url.Values{
			"id": {html.UnescapeString(id[1])}, "username": {user}, "password": {"verysecure"},
		}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		p = b.do(req)
		if strings.Contains(p.body, "Choose a patient") {
			p = b.submit(p, url.Values{"patient": {"b"}})
		}
		if p.loc == "" {
			p = b.approve(p)
		}
		return p, v
	}

	p, v := signIn("test-user@" + strings.Split(strings.TrimPrefix(issuer, "http://"), ":")[0])
	q, err := codeFrom(t, p)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := app.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Extra("patient") != "b" {
		t.Errorf("patient = %v", tok.Extra("patient"))
	}
	st, body, _ := e.postForm("/auth/introspect", url.Values{"token": {tok.AccessToken}}, http.Header{"Authorization": {"Bearer " + tok.AccessToken}})
	if st != 200 || body["fhirUser"] != "Practitioner/p9" || !strings.HasSuffix(body["sub"].(string), "|id1") {
		t.Errorf("introspection = %d %v", st, body)
	}
	_, bundle, _ := e.fhirDo(http.MethodGet, "/Observation", tok.AccessToken, nil)
	if got := bundleIDs(bundle); len(got) != 1 || got[0] != "Observation/b-vital" {
		t.Errorf("Observation = %v", got)
	}

	// A user the provider knows but nobody mapped gets no access.
	p, _ = signIn("test-user2")
	if q, err := codeFrom(t, p); err == nil || q.Get("error") != "access_denied" || q.Get("state") != "up-state" {
		t.Errorf("unmapped user: %v %v", q, err)
	}
}
