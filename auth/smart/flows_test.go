package smart_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/anodyne-fhir/anodyne/auth/smart"
)

const redirect = "https://app.example/callback"

// loginAs drives the pages: login, then the picker (choosing pick when it
// is shown), then consent. It returns the final page.
func loginAs(t testing.TB, b *browser, authURL, user, pick string) page {
	t.Helper()
	p := b.get(authURL)
	if p.loc != "" {
		return p // an error redirected straight to the app
	}
	if !strings.Contains(p.body, "Sign in") {
		t.Fatalf("expected the login page, got %d %s", p.status, p.body)
	}
	p = b.submit(p, url.Values{"username": {user}, "password": {"correct horse battery"}})
	if strings.Contains(p.body, "Choose a patient") {
		choices := radioRe.FindAllStringSubmatch(p.body, -1)
		if len(choices) < 2 {
			t.Fatalf("picker with %d choices", len(choices))
		}
		p = b.submit(p, url.Values{"patient": {pick}})
	}
	if p.loc != "" {
		return p
	}
	return b.approve(p)
}

func TestStandaloneLaunchWithPatientPickerAndRefresh(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.addClient(smart.Client{ID: "diary", Type: smart.ClientPublic, RedirectURIs: []string{redirect},
		Scopes: "openid fhirUser launch/patient offline_access patient/*.rs"}, "")
	e.addAccount("dr.who", "Practitioner/p1", "a", "b")
	ctx := context.Background()

	vital := "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
	app := e.app("diary", redirect, "openid", "fhirUser", "launch/patient", "offline_access", vital, "patient/Patient.rs")
	verifier := oauth2.GenerateVerifier()
	authURL := app.AuthCodeURL("st-123", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("aud", e.fhirBase))
	q, err := codeFrom(t, loginAs(t, newBrowser(t, redirect), authURL, "dr.who", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if q.Get("state") != "st-123" {
		t.Errorf("state = %q", q.Get("state"))
	}
	tok, err := app.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Extra("patient") != "a" || tok.Extra("need_patient_banner") != true {
		t.Errorf("patient = %v, banner = %v", tok.Extra("patient"), tok.Extra("need_patient_banner"))
	}
	if got := tok.Extra("scope"); !strings.Contains(got.(string), vital) {
		t.Errorf("granted scope %q lost the query-limited scope", got)
	}
	if tok.RefreshToken == "" {
		t.Error("offline_access gave no refresh token")
	}
	if exp, ok := tok.Extra("expires_in").(float64); !ok || exp <= 0 || exp > 3600 {
		t.Errorf("expires_in = %v", tok.Extra("expires_in"))
	}

	// id_token: verified by a real OIDC client against our discovery.
	prov, err := oidc.NewProvider(ctx, e.base)
	if err != nil {
		t.Fatal(err)
	}
	idt, err := prov.Verifier(&oidc.Config{ClientID: "diary"}).Verify(ctx, tok.Extra("id_token").(string))
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		FHIRUser string `json:"fhirUser"`
	}
	_ = idt.Claims(&claims)
	if claims.FHIRUser != "Practitioner/p1" || idt.Subject != "dr.who" {
		t.Errorf("id_token sub %q fhirUser %q", idt.Subject, claims.FHIRUser)
	}

	// The data: vital signs of patient a only; no labs, nothing of b.
	st, bundle, _ := e.fhirDo(http.MethodGet, "/Observation", tok.AccessToken, nil)
	if got := bundleIDs(bundle); st != 200 || !slices.Equal(got, []string{"Observation/a-vital"}) {
		t.Errorf("search Observation = %d %v, want only a-vital", st, got)
	}
	if st, _, _ := e.fhirDo(http.MethodGet, "/Observation/b-vital", tok.AccessToken, nil); st != http.StatusForbidden && st != http.StatusNotFound {
		t.Errorf("read of another patient's observation = %d", st)
	}
	if st, _, _ := e.fhirDo(http.MethodGet, "/Observation/a-lab", tok.AccessToken, nil); st != http.StatusForbidden && st != http.StatusNotFound {
		t.Errorf("read outside the query-limited scope = %d", st)
	}
	if st, body, _ := e.fhirDo(http.MethodGet, "/Patient/a", tok.AccessToken, nil); st != 200 || body["id"] != "a" {
		t.Errorf("read own Patient = %d %v", st, body["id"])
	}
	if st, _, _ := e.fhirDo(http.MethodGet, "/Condition", tok.AccessToken, nil); st != http.StatusForbidden {
		t.Errorf("search Condition without scope = %d, want 403", st)
	}

	// Refresh with a narrower scope keeps the "|" and the context.
	st, body, hdr := e.postForm("/auth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {"diary"}, "scope": {vital}}, nil)
	if st != 200 || body["scope"] != vital || body["patient"] != "a" {
		t.Fatalf("refresh = %d %v", st, body)
	}
	if hdr.Get("Cache-Control") != "no-store" || hdr.Get("Pragma") != "no-cache" {
		t.Errorf("token response headers %v", hdr)
	}
	st2, bundle2, _ := e.fhirDo(http.MethodGet, "/Observation", body["access_token"].(string), nil)
	if got := bundleIDs(bundle2); st2 != 200 || !slices.Equal(got, []string{"Observation/a-vital"}) {
		t.Errorf("search with refreshed token = %d %v", st2, got)
	}
	// The old refresh token was rotated away; a wider scope is refused.
	if st, _, _ := e.postForm("/auth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {"diary"}}, nil); st != http.StatusBadRequest {
		t.Errorf("reused refresh token = %d, want 400", st)
	}
	rt := body["refresh_token"].(string)
	if st, b, _ := e.postForm("/auth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"diary"}, "scope": {"patient/*.cruds"}}, nil); st != http.StatusBadRequest || b["error"] != "invalid_scope" {
		t.Errorf("refresh with wider scope = %d %v", st, b)
	}
	if st, b, _ := e.postForm("/auth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"garbage"}, "client_id": {"diary"}}, nil); st != http.StatusBadRequest || b["error"] != "invalid_grant" {
		t.Errorf("invalid refresh token = %d %v", st, b)
	}
}

func TestStandalonePatientUserNeedsNoPicker(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.addClient(smart.Client{ID: "diary", Type: smart.ClientPublic, RedirectURIs: []string{redirect}, Scopes: "launch/patient patient/*.rs"}, "")
	e.addAccount("beta", "Patient/b")
	app := e.app("diary", redirect, "launch/patient", "patient/Observation.rs", "patient/Condition.rs")
	v := oauth2.GenerateVerifier()
	p := loginAs(t, newBrowser(t, redirect), app.AuthCodeURL("s", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("aud", e.fhirBase)), "beta", "")
	q, err := codeFrom(t, p)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := app.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Extra("patient") != "b" || tok.RefreshToken != "" {
		t.Errorf("patient %v refresh %q", tok.Extra("patient"), tok.RefreshToken)
	}
	_, bundle, _ := e.fhirDo(http.MethodGet, "/Observation", tok.AccessToken, nil)
	if got := bundleIDs(bundle); !slices.Equal(got, []string{"Observation/b-vital"}) {
		t.Errorf("Observation = %v", got)
	}
	_, bundle, _ = e.fhirDo(http.MethodGet, "/Condition", tok.AccessToken, nil)
	if got := bundleIDs(bundle); len(got) != 0 {
		t.Errorf("Condition of patient a leaked: %v", got)
	}
}

func TestEHRLaunch(t *testing.T) {
	e := newEnv(t)
	e.seed()
	ehrKey := newSigner(t, jose.RS384)
	e.addClient(smart.Client{ID: "ehr", Type: smart.ClientAsymmetric, JWKS: ehrKey.jwks(), Scopes: "system/Patient.rs", LaunchEHR: true}, "")
	secret := e.addClient(smart.Client{ID: "rpm", Type: smart.ClientSymmetric, RedirectURIs: []string{redirect},
		Scopes: "launch openid fhirUser online_access patient/*.rs"}, "")
	e.addAccount("nurse", "Practitioner/n1", "a", "b")

	// The EHR creates the context through the authenticated API.
	ehrTok := e.backendToken("ehr", ehrKey, "system/Patient.rs")
	st, launch, lr := e.createLaunch(t, ehrTok, `{"client_id":"rpm","patient":"a","encounter":"enc-1","need_patient_banner":false,"fhirContext":[{"reference":"Condition/a-cond"}]}`)
	if st != http.StatusCreated || launch == "" || lr["iss"] != e.fhirBase {
		t.Fatalf("create launch = %d %v", st, lr)
	}
	// An app's token cannot create launches.
	req2, _ := http.NewRequest(http.MethodPost, e.base+"/auth/launch", strings.NewReader(`{"patient":"b"}`))
	if r2, _ := http.DefaultClient.Do(req2); r2.StatusCode != http.StatusUnauthorized {
		t.Errorf("launch without token = %d", r2.StatusCode)
	}

	app := e.app("rpm", redirect, "launch", "openid", "fhirUser", "online_access", "patient/Observation.rs")
	app.ClientSecret = secret
	app.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
	v := oauth2.GenerateVerifier()
	authURL := app.AuthCodeURL("ehr-state", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("aud", e.fhirBase), oauth2.SetAuthURLParam("launch", launch))
	q, err := codeFrom(t, loginAs(t, newBrowser(t, redirect), authURL, "nurse", ""))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := app.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Extra("patient") != "a" || tok.Extra("encounter") != "enc-1" || tok.Extra("need_patient_banner") != false {
		t.Errorf("context patient=%v encounter=%v banner=%v", tok.Extra("patient"), tok.Extra("encounter"), tok.Extra("need_patient_banner"))
	}
	fc, _ := tok.Extra("fhirContext").([]any)
	if len(fc) != 1 || fc[0].(map[string]any)["reference"] != "Condition/a-cond" {
		t.Errorf("fhirContext = %v", tok.Extra("fhirContext"))
	}
	if tok.RefreshToken == "" {
		t.Error("online_access on an EHR launch gave no refresh token")
	}
	_, bundle, _ := e.fhirDo(http.MethodGet, "/Observation", tok.AccessToken, nil)
	got := bundleIDs(bundle)
	sort.Strings(got)
	if !slices.Equal(got, []string{"Observation/a-lab", "Observation/a-vital"}) {
		t.Errorf("Observation = %v", got)
	}
	// An unknown launch value is refused with the state echoed.
	p := newBrowser(t, redirect).get(app.AuthCodeURL("x", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("aud", e.fhirBase), oauth2.SetAuthURLParam("launch", "forged")))
	if q, err := codeFrom(t, p); err == nil || q.Get("state") != "x" {
		t.Errorf("forged launch: %v %v", q, err)
	}
}

func decodeBody(t *testing.T, resp *http.Response, v any) {
	t.Helper()
	defer resp.Body.Close()
	if err := jsonDecode(resp.Body, v); err != nil {
		t.Fatal(err)
	}
}
