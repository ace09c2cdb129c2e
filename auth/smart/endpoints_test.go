package smart_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/anodyne-fhir/anodyne/auth/smart"
)

func getJSON(t *testing.T, u string, hdr http.Header) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m, resp.Header
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestDiscovery(t *testing.T) {
	e := newEnv(t)
	st, sc, hdr := getJSON(t, e.fhirBase+"/.well-known/smart-configuration", http.Header{"Accept": {"text/html"}, "Origin": {"https://anyone.example"}})
	if st != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") || hdr.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("smart-configuration = %d %v", st, hdr)
	}
	for _, k := range []string{"token_endpoint", "authorization_endpoint", "issuer", "jwks_uri", "introspection_endpoint", "revocation_endpoint"} {
		u, _ := sc[k].(string)
		if pu, err := url.Parse(u); err != nil || !pu.IsAbs() || !strings.HasPrefix(u, e.base) {
			t.Errorf("%s = %q, want an absolute URL on our base", k, u)
		}
	}
	if sc["management_endpoint"] != nil || sc["registration_endpoint"] != nil {
		t.Error("advertises endpoints that do not exist")
	}
	ccm := strs(sc["code_challenge_methods_supported"])
	if !slices.Contains(ccm, "S256") || slices.Contains(ccm, "plain") {
		t.Errorf("code_challenge_methods_supported = %v", ccm)
	}
	gt := strs(sc["grant_types_supported"])
	if !slices.Contains(gt, "authorization_code") || !slices.Contains(gt, "client_credentials") {
		t.Errorf("grant_types_supported = %v", gt)
	}
	caps := strs(sc["capabilities"])
	for _, c := range []string{"launch-ehr", "launch-standalone", "client-public", "client-confidential-asymmetric", "sso-openid-connect", "permission-v1", "permission-v2", "context-standalone-patient"} {
		if !slices.Contains(caps, c) {
			t.Errorf("capability %s missing", c)
		}
	}
	if slices.Contains(caps, "context-standalone-encounter") {
		t.Error("advertises an encounter picker it does not have")
	}
	if algs := strs(sc["token_endpoint_auth_signing_alg_values_supported"]); !slices.Equal(algs, []string{"RS384", "ES384"}) {
		t.Errorf("signing algs = %v", algs)
	}

	st, oc, _ := getJSON(t, e.base+"/.well-known/openid-configuration", nil)
	if st != 200 || oc["issuer"] != e.base || oc["jwks_uri"] != sc["jwks_uri"] || !slices.Contains(strs(oc["id_token_signing_alg_values_supported"]), "RS256") {
		t.Errorf("openid-configuration = %d %v", st, oc)
	}
	for _, k := range []string{"authorization_endpoint", "token_endpoint", "response_types_supported", "subject_types_supported"} {
		if oc[k] == nil {
			t.Errorf("openid-configuration lacks %s", k)
		}
	}
	st, jwks, _ := getJSON(t, sc["jwks_uri"].(string), nil)
	keys, _ := jwks["keys"].([]any)
	if st != 200 || len(keys) != 1 || keys[0].(map[string]any)["d"] != nil {
		t.Errorf("jwks = %d %v (must be public keys only)", st, jwks)
	}
	// rest.security carries the same URLs.
	sec, _ := json.Marshal(e.as.SecurityComponent())
	for _, k := range []string{"authorization_endpoint", "token_endpoint"} {
		if !strings.Contains(string(sec), sc[k].(string)) {
			t.Errorf("SecurityComponent lacks %s", k)
		}
	}
}

func TestIntrospectionAndRevocation(t *testing.T) {
	e := newEnv(t)
	e.addClient(smart.Client{ID: "app", Type: smart.ClientPublic, RedirectURIs: []string{redirect}, Scopes: "openid fhirUser launch/patient patient/*.rs offline_access"}, "")
	rsSecret := e.addClient(smart.Client{ID: "rs", Type: smart.ClientSymmetric, ResourceServer: true}, "")
	e.addAccount("alice", "Patient/a")
	app := e.app("app", redirect, "openid", "fhirUser", "launch/patient", "patient/Observation.rs", "offline_access")
	v := oauth2.GenerateVerifier()
	q, err := codeFrom(t, loginAs(t, newBrowser(t, redirect), app.AuthCodeURL("s", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("aud", e.fhirBase)), "alice", ""))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := app.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	basic := http.Header{"Authorization": {"Basic " + basicAuth("rs", rsSecret)}}
	introspect := func(token string, hdr http.Header) (int, map[string]any) {
		st, body, _ := e.postForm("/auth/introspect", url.Values{"token": {token}}, hdr)
		return st, body
	}
	st, body := introspect(tok.AccessToken, basic)
	if st != 200 || body["active"] != true || body["client_id"] != "app" || body["patient"] != "a" || body["fhirUser"] != "Patient/a" ||
		body["scope"] != tok.Extra("scope") || body["sub"] != "alice" || body["iss"] != e.base || body["exp"] == nil {
		t.Errorf("active introspection = %d %v", st, body)
	}
	// With one of our access tokens as the caller's credential.
	if st, body := introspect(tok.AccessToken, http.Header{"Authorization": {"Bearer " + tok.AccessToken}}); st != 200 || body["active"] != true {
		t.Errorf("bearer-authenticated introspection = %d %v", st, body)
	}
	if st, body := introspect("garbage", basic); st != 200 || len(body) != 1 || body["active"] != false {
		t.Errorf("inactive introspection = %d %v", st, body)
	}
	if st, _ := introspect(tok.AccessToken, nil); st != 401 {
		t.Errorf("unauthenticated introspection = %d", st)
	}
	if st, _ := introspect(tok.AccessToken, http.Header{"Authorization": {"Basic " + basicAuth("rs", "wrong-secret-000000")}}); st != 401 {
		t.Errorf("bad client secret = %d", st)
	}

	// Another client cannot revoke the app's token; the app can.
	e.postForm("/auth/revoke", url.Values{"token": {tok.AccessToken}}, basic)
	if _, body := introspect(tok.AccessToken, basic); body["active"] != true {
		t.Error("a foreign client revoked the token")
	}
	for _, tk := range []string{tok.AccessToken, tok.RefreshToken} {
		if st, _, _ := e.postForm("/auth/revoke", url.Values{"token": {tk}, "client_id": {"app"}}, nil); st != 200 {
			t.Errorf("revoke = %d", st)
		}
		if st, body := introspect(tk, basic); st != 200 || len(body) != 1 || body["active"] != false {
			t.Errorf("revoked token introspection = %v", body)
		}
	}
	if st, _, _ := e.postForm("/auth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {"app"}}, nil); st != 400 {
		t.Errorf("revoked refresh token = %d", st)
	}
}

func basicAuth(u, p string) string {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(u, p)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

func TestKeyRotationKeepsOldTokensValid(t *testing.T) {
	e := newEnv(t)
	e.seed()
	s := newSigner(t, jose.RS384)
	e.addClient(smart.Client{ID: "svc", Type: smart.ClientAsymmetric, JWKS: s.jwks(), Scopes: "system/*.rs"}, "")
	old := e.backendToken("svc", s, "system/*.rs")
	kid, err := e.as.RotateKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fresh := e.backendToken("svc", s, "system/*.rs")
	for _, tk := range []string{old, fresh} {
		if st, _, _ := e.fhirDo(http.MethodGet, "/Patient/a", tk, nil); st != 200 {
			t.Errorf("token after rotation = %d", st)
		}
	}
	hdr, _ := jose.ParseSigned(fresh, []jose.SignatureAlgorithm{jose.RS256})
	if hdr.Signatures[0].Header.KeyID != kid {
		t.Errorf("new token kid %q, want %q", hdr.Signatures[0].Header.KeyID, kid)
	}
	_, jwks, _ := getJSON(t, e.base+"/auth/jwks", nil)
	if keys, _ := jwks["keys"].([]any); len(keys) != 2 {
		t.Errorf("JWKS has %d keys during the overlap, want 2", len(keys))
	}
	// A second server on the same store (a restart) keeps the rotated key.
	as2, err := smart.New(context.Background(), smart.Config{BaseURL: e.base, KV: e.kv})
	if err != nil {
		t.Fatal(err)
	}
	if as2.Issuer() != e.base {
		t.Errorf("issuer %q", as2.Issuer())
	}
}

func TestCORS(t *testing.T) {
	e := newEnv(t)
	e.addClient(smart.Client{ID: "web", Type: smart.ClientPublic, RedirectURIs: []string{redirect}, Origins: []string{"https://app.example"}, Scopes: "patient/*.rs"}, "")
	preflight := func(path, origin string) (int, string) {
		req, _ := http.NewRequest(http.MethodOptions, e.base+path, nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin")
	}
	for _, c := range []struct {
		path, origin, want string
	}{
		{"/auth/token", "https://app.example", "https://app.example"},
		{"/auth/token", "https://evil.example", ""},
		{"/fhir/Observation", "https://app.example", "https://app.example"},
		{"/fhir/Observation", "https://evil.example", ""},
		{"/fhir/.well-known/smart-configuration", "https://evil.example", "*"},
		{"/fhir/metadata", "https://evil.example", "*"},
	} {
		if _, got := preflight(c.path, c.origin); got != c.want {
			t.Errorf("preflight %s from %s: Allow-Origin %q, want %q", c.path, c.origin, got, c.want)
		}
	}
}

func TestAdminAPI(t *testing.T) {
	e := newEnv(t)
	do := func(method, path, token, body string) (int, string) {
		req, _ := http.NewRequest(method, e.base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, _ := do(http.MethodGet, "/auth/admin/clients", "", ""); st != 401 {
		t.Errorf("list without admin token = %d", st)
	}
	if st, _ := do(http.MethodGet, "/auth/admin/clients", "wrong", ""); st != 401 {
		t.Errorf("list with wrong token = %d", st)
	}
	st, body := do(http.MethodPost, "/auth/admin/clients", "admin-secret-token", `{"client_id":"conf","type":"confidential-symmetric","redirect_uris":["https://c.example/cb"],"scope":"user/*.rs"}`)
	var created map[string]any
	_ = json.Unmarshal([]byte(body), &created)
	secret, _ := created["client_secret"].(string)
	if st != 201 || len(secret) < 32 {
		t.Fatalf("create = %d %s", st, body)
	}
	if st, body := do(http.MethodPost, "/auth/admin/clients", "admin-secret-token", `{"client_id":"bad","type":"confidential-asymmetric","scope":"user/*.rs"}`); st != 400 {
		t.Errorf("asymmetric client without keys = %d %s", st, body)
	}
	if st, body := do(http.MethodPost, "/auth/admin/clients", "admin-secret-token", `{"client_id":"bad2","type":"public","scope":"user/Observation.sr"}`); st != 400 {
		t.Errorf("malformed scopes = %d %s", st, body)
	}
	st, body = do(http.MethodGet, "/auth/admin/clients", "admin-secret-token", "")
	if st != 200 || !strings.Contains(body, `"conf"`) || strings.Contains(body, "argon2") {
		t.Errorf("list = %d %s", st, body)
	}
	// The generated secret authenticates the client.
	if st, _, _ := e.postForm("/auth/introspect", url.Values{"token": {"x"}}, http.Header{"Authorization": {"Basic " + basicAuth("conf", secret)}}); st != 200 {
		t.Errorf("generated secret rejected: %d", st)
	}
	if st, _ := do(http.MethodDelete, "/auth/admin/clients/conf", "admin-secret-token", ""); st != 204 {
		t.Errorf("delete = %d", st)
	}
	if st, _ := do(http.MethodDelete, "/auth/admin/clients/conf", "admin-secret-token", ""); st != 404 {
		t.Errorf("second delete = %d", st)
	}
}
