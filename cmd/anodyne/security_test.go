package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
)

// syncBuffer is a log sink the server goroutine writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is one "anodyne serve" started by a test.
type running struct {
	base string
	logs *syncBuffer
	stop func()
}

// startServe runs "anodyne serve --listen 127.0.0.1:0 args..." through run,
// as main does, and stops it (as SIGTERM would) at the end of the test.
func startServe(t *testing.T, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() {
		done <- run(ctx, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...), io.Discard, logs, func(string) string { return "" }, ready)
	}()
	var stopped bool
	r := &running{logs: logs}
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve returned %v\n%s", err, logs)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	}
	select {
	case addr := <-ready:
		r.base = "http://" + addr
	case err := <-done:
		cancel()
		t.Fatalf("serve exited: %v\n%s", err, logs)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("serve did not start")
	}
	t.Cleanup(r.stop)
	return r
}

// cli runs one anodyne subcommand and returns its standard output.
func cli(t testing.TB, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), args, &out, &errOut, func(string) string { return "" }, nil); err != nil {
		t.Fatalf("anodyne %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

// call does one HTTP request and decodes a JSON answer, if any.
func call(t *testing.T, method, u, token string, hdr map[string]string, body any) (*http.Response, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/fhir+json")
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	if len(b) > 0 {
		_ = json.Unmarshal(b, &m)
	}
	return res, m
}

// TestServeSecureByDefault: without --auth the server requires a token on
// the FHIR API and answers 401 with a challenge; discovery and metadata are
// public and agree with each other; CORS follows SMART (discovery open to
// any origin, the API only to registered origins).
func TestServeSecureByDefault(t *testing.T) {
	dir := t.TempDir()
	cli(t, "clients", "add", "--data-dir", dir, "--id", "web", "--type", "public",
		"--redirect-uri", "https://web.example/cb", "--origin", "https://web.example", "--scope", "patient/*.rs")
	srv := startServe(t, "--data-dir", dir)
	if strings.Contains(srv.logs.String(), "AUTHORIZATION IS OFF") {
		t.Errorf("default start warns that authorization is off:\n%s", srv.logs)
	}

	for _, p := range []string{"/fhir/Patient", "/fhir/Patient/x", "/fhir/_history", "/fhir/AuditEvent"} {
		res, _ := call(t, http.MethodGet, srv.base+p, "", nil, nil)
		if res.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("GET %s without a token: %d, WWW-Authenticate %q", p, res.StatusCode, res.Header.Get("WWW-Authenticate"))
		}
	}
	res, _ := call(t, http.MethodGet, srv.base+"/fhir/Patient", "not-a-jwt", nil, nil)
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(res.Header.Get("WWW-Authenticate"), "invalid_token") {
		t.Errorf("bad token: %d %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
	}

	res, smartCfg := call(t, http.MethodGet, srv.base+"/fhir/.well-known/smart-configuration", "", map[string]string{"Origin": "https://anywhere.example"}, nil)
	if res.StatusCode != http.StatusOK || res.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("smart-configuration: %d, ACAO %q", res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
	}
	if smartCfg["issuer"] != srv.base || smartCfg["token_endpoint"] != srv.base+"/auth/token" {
		t.Errorf("smart-configuration %v", smartCfg)
	}
	res, oidcCfg := call(t, http.MethodGet, srv.base+"/.well-known/openid-configuration", "", nil, nil)
	if res.StatusCode != http.StatusOK || oidcCfg["token_endpoint"] != smartCfg["token_endpoint"] {
		t.Errorf("openid-configuration: %d %v", res.StatusCode, oidcCfg)
	}

	res, cs := call(t, http.MethodGet, srv.base+"/fhir/metadata", "", map[string]string{"Origin": "https://anywhere.example"}, nil)
	if res.StatusCode != http.StatusOK || res.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("metadata: %d, ACAO %q", res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
	}
	sec, _ := cs["rest"].([]any)[0].(map[string]any)["security"].(map[string]any)
	b, _ := json.Marshal(sec)
	if !strings.Contains(string(b), `"code":"SMART-on-FHIR"`) {
		t.Errorf("rest.security lacks the SMART-on-FHIR service: %s", b)
	}
	uris := map[string]string{}
	for _, ext := range sec["extension"].([]any) {
		ext := ext.(map[string]any)
		if ext["url"] != "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris" {
			continue
		}
		for _, sub := range ext["extension"].([]any) {
			sub := sub.(map[string]any)
			uris[sub["url"].(string)] = sub["valueUri"].(string)
		}
	}
	for name, key := range map[string]string{"authorize": "authorization_endpoint", "token": "token_endpoint", "introspect": "introspection_endpoint", "revoke": "revocation_endpoint"} {
		if uris[name] == "" || uris[name] != smartCfg[key] {
			t.Errorf("oauth-uris %s = %q, smart-configuration %s = %v", name, uris[name], key, smartCfg[key])
		}
	}

	cors := []struct {
		name, method, path, origin, want string
	}{
		{"API, registered origin", http.MethodGet, "/fhir/Patient", "https://web.example", "https://web.example"},
		{"API, unknown origin", http.MethodGet, "/fhir/Patient", "https://evil.example", ""},
		{"token preflight, registered origin", http.MethodOptions, "/auth/token", "https://web.example", "https://web.example"},
		{"token preflight, unknown origin", http.MethodOptions, "/auth/token", "https://evil.example", ""},
		{"API preflight, registered origin", http.MethodOptions, "/fhir/Patient", "https://web.example", "https://web.example"},
	}
	for _, tc := range cors {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{"Origin": tc.origin}
			if tc.method == http.MethodOptions {
				hdr["Access-Control-Request-Method"] = "POST"
			}
			res, _ := call(t, tc.method, srv.base+tc.path, "", hdr, nil)
			if got := res.Header.Get("Access-Control-Allow-Origin"); got != tc.want {
				t.Errorf("ACAO %q, want %q (status %d)", got, tc.want, res.StatusCode)
			}
		})
	}
}

// browser is a user agent without JavaScript that follows the server's
// redirects, keeps cookies, and stops at the app's redirect URI.
type browser struct {
	t      *testing.T
	c      *http.Client
	stopAt string
}

type page struct {
	url  *url.URL
	body string
	loc  string
}

var (
	formRe   = regexp.MustCompile(`<form method="post" action="([^"]*)">`)
	hiddenRe = regexp.MustCompile(`<input type="hidden" name="(\w+)" value="([^"]*)">`)
	scopeRe  = regexp.MustCompile(`name="scope" value="([^"]*)"`)
)

func newBrowser(t *testing.T, stopAt string) *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{t: t, stopAt: stopAt}
	b.c = &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), b.stopAt) {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	return b
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	res, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return page{url: res.Request.URL, body: string(body), loc: res.Header.Get("Location")}
}

// submit posts the page's form with its hidden fields and extra.
func (b *browser) submit(p page, extra url.Values) page {
	b.t.Helper()
	m := formRe.FindStringSubmatch(p.body)
	if m == nil {
		b.t.Fatalf("no form on %s: %s", p.url, p.body)
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

// es384 is a backend-services key with its public JWKS.
func es384(t testing.TB) (*ecdsa.PrivateKey, []byte) {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k.Public(), KeyID: "k1", Algorithm: "ES384", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return k, jwks
}

// backendToken runs SMART backend services (client_credentials with a
// private_key_jwt assertion) and returns the access token.
func backendToken(t testing.TB, base, clientID string, key *ecdsa.PrivateKey, scope string) string {
	t.Helper()
	return backendTokenAt(t, base+"/auth/token", base+"/auth/token", clientID, key, scope)
}

// backendTokenAt is backendToken posting to endpoint an assertion whose
// audience is aud: the token endpoint's URL under the server's base URL,
// which differs from the address posted to behind a balancer.
func backendTokenAt(t testing.TB, endpoint, aud, clientID string, key *ecdsa.PrivateKey, scope string) string {
	t.Helper()
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES384, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	jti := make([]byte, 8)
	_, _ = rand.Read(jti)
	claims, _ := json.Marshal(map[string]any{"iss": clientID, "sub": clientID, "aud": aud, "exp": now.Add(4 * time.Minute).Unix(), "iat": now.Unix(), "jti": fmt.Sprintf("%x", jti)})
	jws, err := sg.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	assertion, _ := jws.CompactSerialize()
	res, err := http.PostForm(endpoint, url.Values{
		"grant_type": {"client_credentials"}, "scope": {scope},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(res.Body).Decode(&body)
	tok, _ := body["access_token"].(string)
	if res.StatusCode != http.StatusOK || tok == "" {
		t.Fatalf("client_credentials for %s: %d %v", clientID, res.StatusCode, body)
	}
	return tok
}

func bundleIDs(b map[string]any) []string {
	var out []string
	entries, _ := b["entry"].([]any)
	for _, en := range entries {
		r, _ := en.(map[string]any)["resource"].(map[string]any)
		out = append(out, fmt.Sprintf("%s/%s", r["resourceType"], r["id"]))
	}
	slices.Sort(out)
	return out
}

// TestSmartStandaloneLaunchThroughCLI is the whole story on the real
// command: data written in development mode, an app and a user registered
// with the CLI, the server restarted secure, a SMART standalone launch
// (login, patient picker, consent, code + PKCE), FHIR reads limited to the
// chosen patient, and the audit trail readable by an auditor only.
func TestSmartStandaloneLaunchThroughCLI(t *testing.T) {
	dir := t.TempDir()
	const redirect = "https://diary.example/callback"

	dev := startServe(t, "--data-dir", dir, "--auth=off")
	for _, r := range []map[string]any{
		{"resourceType": "Patient", "id": "a", "active": true},
		{"resourceType": "Patient", "id": "b", "active": true},
		{"resourceType": "Observation", "id": "a-obs", "status": "final", "code": map[string]any{"text": "pain"}, "subject": map[string]any{"reference": "Patient/a"}},
		{"resourceType": "Observation", "id": "b-obs", "status": "final", "code": map[string]any{"text": "pain"}, "subject": map[string]any{"reference": "Patient/b"}},
	} {
		res, body := call(t, http.MethodPut, fmt.Sprintf("%s/fhir/%s/%s", dev.base, r["resourceType"], r["id"]), "", nil, r)
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("seed: %d %v", res.StatusCode, body)
		}
	}
	dev.stop()

	out := cli(t, "clients", "add", "--data-dir", dir, "--id", "diary", "--name", "Pain diary", "--type", "public",
		"--redirect-uri", redirect, "--origin", "https://diary.example",
		"--scope", "openid fhirUser launch/patient patient/*.rs")
	if !strings.Contains(out, "registered diary") {
		t.Errorf("clients add: %q", out)
	}
	key, jwks := es384(t)
	jwksFile := filepath.Join(t.TempDir(), "jwks.json")
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pwFile, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, "clients", "add", "--data-dir", dir, "--id", "auditor", "--type", "confidential-asymmetric", "--jwks-file", jwksFile, "--scope", "system/AuditEvent.rs")
	cli(t, "clients", "add", "--data-dir", dir, "--id", "gone", "--type", "public", "--redirect-uri", redirect, "--scope", "patient/*.rs")
	cli(t, "clients", "remove", "--data-dir", dir, "gone")
	list := cli(t, "clients", "list", "--data-dir", dir)
	if !strings.Contains(list, "diary") || !strings.Contains(list, "auditor") || strings.Contains(list, "gone") {
		t.Errorf("clients list:\n%s", list)
	}
	cli(t, "users", "add", "--data-dir", dir, "--username", "dr.who", "--fhir-user", "Practitioner/p1", "--patient", "a", "--patient", "b", "--password-file", pwFile)

	srv := startServe(t, "--data-dir", dir)
	app := &oauth2.Config{
		ClientID: "diary", RedirectURL: redirect,
		Scopes:   []string{"openid", "fhirUser", "launch/patient", "patient/Patient.rs", "patient/Observation.rs"},
		Endpoint: oauth2.Endpoint{AuthURL: srv.base + "/auth/authorize", TokenURL: srv.base + "/auth/token", AuthStyle: oauth2.AuthStyleInParams},
	}
	verifier := oauth2.GenerateVerifier()
	br := newBrowser(t, redirect)
	req, _ := http.NewRequest(http.MethodGet, app.AuthCodeURL("st-1", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("aud", srv.base+"/fhir")), nil)
	p := br.do(req)
	if !strings.Contains(p.body, "Sign in") {
		t.Fatalf("expected the login page: %s %s", p.loc, p.body)
	}
	p = br.submit(p, url.Values{"username": {"dr.who"}, "password": {"correct horse battery staple"}})
	if !strings.Contains(p.body, "Choose a patient") {
		t.Fatalf("expected the patient picker: %s", p.body)
	}
	p = br.submit(p, url.Values{"patient": {"a"}})
	if !strings.Contains(p.body, "Allow access?") {
		t.Fatalf("expected the consent page: %s", p.body)
	}
	var offered []string
	for _, m := range scopeRe.FindAllStringSubmatch(p.body, -1) {
		offered = append(offered, html.UnescapeString(m[1]))
	}
	p = br.submit(p, url.Values{"scope": offered, "decision": {"allow"}})
	back, err := url.Parse(p.loc)
	if err != nil || back.Query().Get("code") == "" || back.Query().Get("state") != "st-1" {
		t.Fatalf("redirect to the app: %q %s", p.loc, p.body)
	}
	tok, err := app.Exchange(context.Background(), back.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Extra("patient") != "a" {
		t.Errorf("patient in context %v", tok.Extra("patient"))
	}

	fhir := srv.base + "/fhir"
	reads := []struct {
		path string
		want int
		ids  []string
	}{
		{"/Patient/a", http.StatusOK, nil},
		{"/Patient/b", http.StatusForbidden, nil},
		{"/Observation", http.StatusOK, []string{"Observation/a-obs"}},
		{"/Patient", http.StatusOK, []string{"Patient/a"}},
		{"/AuditEvent", http.StatusForbidden, nil},
	}
	for _, r := range reads {
		res, body := call(t, http.MethodGet, fhir+r.path, tok.AccessToken, nil, nil)
		if res.StatusCode != r.want {
			t.Errorf("GET %s: %d, want %d: %v", r.path, res.StatusCode, r.want, body)
			continue
		}
		if r.ids != nil && !slices.Equal(bundleIDs(body), r.ids) {
			t.Errorf("GET %s returned %v, want %v", r.path, bundleIDs(body), r.ids)
		}
	}

	// A forwarding header from the client is not a source address: the
	// audit trail records the TCP peer, so a client cannot forge it.
	if res, body := call(t, http.MethodGet, fhir+"/Patient/a", tok.AccessToken, map[string]string{"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}, nil); res.StatusCode != http.StatusOK {
		t.Fatalf("read with a forwarding header: %d %v", res.StatusCode, body)
	}

	// The audit trail: the app's read of Patient/a is there, and only a
	// client granted system/AuditEvent.rs can see it.
	at := backendToken(t, srv.base, "auditor", key, "system/AuditEvent.rs")
	res, bundle := call(t, http.MethodGet, fhir+"/AuditEvent?_count=100", at, nil, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("audit search: %d %v", res.StatusCode, bundle)
	}
	var found bool
	for _, en := range bundle["entry"].([]any) {
		b, _ := json.Marshal(en.(map[string]any)["resource"])
		s := string(b)
		if strings.Contains(s, "203.0.113.9") {
			t.Errorf("AuditEvent records a client-supplied forwarding address: %s", s)
		}
		if strings.Contains(s, `"value":"diary"`) && strings.Contains(s, `"code":"read"`) && strings.Contains(s, `"reference":"Patient/a"`) && strings.Contains(s, `"reference":"Practitioner/p1"`) {
			found = true
		}
	}
	if !found {
		t.Errorf("no AuditEvent for the diary's read of Patient/a by Practitioner/p1: %v", bundle)
	}
}

// TestServeAuthOffIsLoud: --auth=off logs a warning and marks every answer.
func TestServeAuthOffIsLoud(t *testing.T) {
	srv := startServe(t, "--data-dir", t.TempDir(), "--auth=off")
	if !strings.Contains(srv.logs.String(), "level=WARN msg=\"AUTHORIZATION IS OFF") {
		t.Errorf("no WARN about authorization being off:\n%s", srv.logs)
	}
	res, _ := call(t, http.MethodGet, srv.base+"/fhir/Patient", "", nil, nil)
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("X-Anodyne-Authorization"), "off") {
		t.Errorf("GET /fhir/Patient with auth off: %d, X-Anodyne-Authorization %q", res.StatusCode, res.Header.Get("X-Anodyne-Authorization"))
	}
}

// TestNextLinkSurvivesRestart: the paging key lives in the store, so a
// next link handed out before a restart still works after it.
func TestNextLinkSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	srv := startServe(t, "--data-dir", dir, "--auth=off", "--audit=off")
	for _, id := range []string{"p1", "p2", "p3"} {
		res, _ := call(t, http.MethodPut, srv.base+"/fhir/Patient/"+id, "", nil, map[string]any{"resourceType": "Patient", "id": id})
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("PUT %s: %d", id, res.StatusCode)
		}
	}
	res, first := call(t, http.MethodGet, srv.base+"/fhir/Patient?_count=2", "", nil, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("search: %d", res.StatusCode)
	}
	var next string
	for _, l := range first["link"].([]any) {
		if l := l.(map[string]any); l["relation"] == "next" {
			next = l["url"].(string)
		}
	}
	if next == "" {
		t.Fatalf("no next link: %v", first)
	}
	srv.stop()

	srv = startServe(t, "--data-dir", dir, "--auth=off", "--audit=off")
	// The port changed with the restart; the path and query did not.
	u, _ := url.Parse(next)
	res, second := call(t, http.MethodGet, srv.base+u.RequestURI(), "", nil, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("next link after restart: %d %v", res.StatusCode, second)
	}
	all := append(bundleIDs(first), bundleIDs(second)...)
	slices.Sort(all)
	if !slices.Equal(all, []string{"Patient/p1", "Patient/p2", "Patient/p3"}) {
		t.Errorf("pages before and after the restart hold %v", all)
	}
	// A forged cursor is still refused.
	res, _ = call(t, http.MethodGet, srv.base+"/fhir/Patient?_count=2&_cursor=eHg.eHg", "", nil, nil)
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("forged cursor: %d", res.StatusCode)
	}
}

// TestAddRefusesReplace: clients add and users add on an existing id fail
// and leave the record alone unless --replace is given; users list shows
// the accounts without their hashes.
func TestAddRefusesReplace(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runErr := func(args ...string) error {
		var out, errOut bytes.Buffer
		return run(context.Background(), args, &out, &errOut, func(string) string { return "" }, nil)
	}
	cli(t, "clients", "add", "--data-dir", dir, "--id", "app", "--type", "public", "--redirect-uri", "http://localhost/cb", "--scope", "patient/*.rs")
	err := runErr("clients", "add", "--data-dir", dir, "--id", "app", "--type", "public", "--redirect-uri", "http://evil.example/cb", "--scope", "patient/*.rs")
	if err == nil || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), "--replace") {
		t.Fatalf("second clients add: %v, want a refusal naming --replace", err)
	}
	if list := cli(t, "clients", "list", "--data-dir", dir); strings.Contains(list, "evil.example") {
		t.Fatalf("refused add changed the client:\n%s", list)
	}
	cli(t, "clients", "add", "--data-dir", dir, "--id", "app", "--type", "public", "--redirect-uri", "http://localhost/cb2", "--scope", "patient/*.rs", "--replace")
	if list := cli(t, "clients", "list", "--data-dir", dir); !strings.Contains(list, "http://localhost/cb2") {
		t.Fatalf("--replace did not replace:\n%s", list)
	}

	cli(t, "users", "add", "--data-dir", dir, "--username", "Dr.Who", "--fhir-user", "Practitioner/p1", "--patient", "a", "--password-file", pwFile)
	err = runErr("users", "add", "--data-dir", dir, "--username", "dr.who", "--fhir-user", "Practitioner/p2", "--password-file", pwFile)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second users add (same name, other case): %v, want a refusal", err)
	}
	list := cli(t, "users", "list", "--data-dir", dir)
	if !strings.Contains(list, "dr.who") || !strings.Contains(list, "Practitioner/p1") || strings.Contains(list, "Practitioner/p2") || strings.Contains(list, "argon2") {
		t.Fatalf("users list after a refused add:\n%s", list)
	}
	cli(t, "users", "add", "--data-dir", dir, "--username", "dr.who", "--fhir-user", "Practitioner/p2", "--password-file", pwFile, "--replace")
	if list := cli(t, "users", "list", "--data-dir", dir); !strings.Contains(list, "Practitioner/p2") {
		t.Fatalf("users add --replace:\n%s", list)
	}
}

func TestMayReturnAuditEvents(t *testing.T) {
	for path, want := range map[string]bool{
		"/fhir":                           true,
		"/fhir/":                          true,
		"/fhir/_history":                  true,
		"/fhir/$export":                   true,
		"/fhir/_search":                   true,
		"/fhir/AuditEvent":                true,
		"/fhir/AuditEvent/abc":            true,
		"/fhir/Patient/$export":           true,
		"/fhir/Patient/p1/$everything":    true,
		"/fhir/Patient/p1/AuditEvent":     true,
		"/fhir/Patient":                   false,
		"/fhir/Observation":               false,
		"/fhir/Observation/o1":            false,
		"/fhir/Observation/o1/_history/2": false,
		"/auth/token":                     false,
		"/fhirx/AuditEvent":               false,
	} {
		if got := mayReturnAuditEvents(path); got != want {
			t.Errorf("mayReturnAuditEvents(%q) = %v, want %v", path, got, want)
		}
	}
}
