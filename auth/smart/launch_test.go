package smart_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/auth/smart"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
)

// createLaunch posts a launch context as the EHR and returns the status,
// the launch value and the whole answer.
func (e *env) createLaunch(t *testing.T, ehrTok, body string) (int, string, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.base+"/auth/launch", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+ehrTok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var lr map[string]any
	decodeBody(t, resp, &lr)
	launch, _ := lr["launch"].(string)
	return resp.StatusCode, launch, lr
}

// TestEHRLaunchBinding: a launch value is not a bearer secret. It is bound
// to the app the EHR named and, when named, the user; it is single-use;
// and it cannot hand a user a patient their account may not see.
func TestEHRLaunchBinding(t *testing.T) {
	e := newEnv(t)
	e.seed()
	ehrKey := newSigner(t, jose.RS384)
	e.addClient(smart.Client{ID: "ehr", Type: smart.ClientAsymmetric, JWKS: ehrKey.jwks(), Scopes: "system/Patient.rs", LaunchEHR: true}, "")
	const appScopes = "launch openid fhirUser patient/*.rs"
	rpmSecret := e.addClient(smart.Client{ID: "rpm", Type: smart.ClientSymmetric, RedirectURIs: []string{redirect}, Scopes: appScopes}, "")
	otherSecret := e.addClient(smart.Client{ID: "other", Type: smart.ClientSymmetric, RedirectURIs: []string{redirect}, Scopes: appScopes}, "")
	e.addClient(smart.Client{ID: "nolaunch", Type: smart.ClientSymmetric, RedirectURIs: []string{redirect}, Scopes: "patient/*.rs"}, "")
	e.addAccount("nurse", "Practitioner/n1", "a")
	e.addAccount("doctor", "Practitioner/d1", "a", "b")
	ehrTok := e.backendToken("ehr", ehrKey, "system/Patient.rs")

	appFor := func(id, secret string) *oauth2.Config {
		app := e.app(id, redirect, "launch", "openid", "fhirUser", "patient/Observation.rs")
		app.ClientSecret = secret
		app.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
		return app
	}
	rpm, other := appFor("rpm", rpmSecret), appFor("other", otherSecret)
	// try runs an authorization with the launch as user and reports the
	// patient of the token, or the error the app received.
	try := func(app *oauth2.Config, launch, user string) (patient string, oauthErr string) {
		t.Helper()
		v := oauth2.GenerateVerifier()
		u := app.AuthCodeURL("st", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("aud", e.fhirBase), oauth2.SetAuthURLParam("launch", launch))
		q, err := codeFrom(t, loginAs(t, newBrowser(t, redirect), u, user, ""))
		if err != nil {
			if q == nil {
				t.Fatalf("no redirect: %v", err)
			}
			return "", q.Get("error")
		}
		tok, err := app.Exchange(t.Context(), q.Get("code"), oauth2.VerifierOption(v))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		p, _ := tok.Extra("patient").(string)
		return p, ""
	}

	for _, tc := range []struct{ name, body string }{
		{"no client_id", `{"patient":"a"}`},
		{"unknown client", `{"client_id":"nobody","patient":"a"}`},
		{"client without launch scope", `{"client_id":"nolaunch","patient":"a"}`},
	} {
		if st, l, _ := e.createLaunch(t, ehrTok, tc.body); st != http.StatusBadRequest || l != "" {
			t.Errorf("%s: create launch = %d %q, want 400", tc.name, st, l)
		}
	}

	st, launch, _ := e.createLaunch(t, ehrTok, `{"client_id":"rpm","patient":"a"}`)
	if st != http.StatusCreated {
		t.Fatalf("create launch = %d", st)
	}
	// Another app presenting the value is refused, and does not burn it.
	if p, errc := try(other, launch, "nurse"); errc != "invalid_request" {
		t.Errorf("launch for rpm used by another client: patient %q error %q", p, errc)
	}
	if p, errc := try(rpm, launch, "nurse"); p != "a" || errc != "" {
		t.Errorf("launch for rpm: patient %q error %q", p, errc)
	}
	// Single use.
	if p, errc := try(rpm, launch, "nurse"); errc != "invalid_request" {
		t.Errorf("second use of a launch: patient %q error %q", p, errc)
	}

	// A patient the signed-in account may not see is refused.
	_, launchB, _ := e.createLaunch(t, ehrTok, `{"client_id":"rpm","patient":"b"}`)
	if p, errc := try(rpm, launchB, "nurse"); errc != "access_denied" {
		t.Errorf("launch for patient b by a nurse who may see only a: patient %q error %q", p, errc)
	}

	// A launch naming a user is for that user only (by user name or fhirUser).
	_, forDoctor, _ := e.createLaunch(t, ehrTok, `{"client_id":"rpm","patient":"b","user":"doctor"}`)
	if p, errc := try(rpm, forDoctor, "nurse"); errc != "access_denied" {
		t.Errorf("launch for the doctor completed by the nurse: patient %q error %q", p, errc)
	}
	_, forDoctor, _ = e.createLaunch(t, ehrTok, `{"client_id":"rpm","patient":"b","user":"Practitioner/d1"}`)
	if p, errc := try(rpm, forDoctor, "doctor"); p != "b" || errc != "" {
		t.Errorf("launch for Practitioner/d1 completed by the doctor: patient %q error %q", p, errc)
	}
}
