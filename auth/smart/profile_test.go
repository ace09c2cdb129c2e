package smart_test

import (
	"net/http"
	"testing"

	"github.com/anodyne-fhir/anodyne/auth/smart"
	oidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// TestProfileClaims: the advertised profile scope releases the OpenID
// standard claims we hold (name, preferred_username) in the id_token, on
// the code exchange and on refresh; without the scope they stay out.
func TestProfileClaims(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.addClient(smart.Client{ID: "diary", Type: smart.ClientPublic, RedirectURIs: []string{redirect},
		Scopes: "openid fhirUser profile offline_access patient/*.rs"}, "")
	if err := e.as.PutAccount(t.Context(), smart.Account{Username: "pat", FHIRUser: "Patient/a", Name: "Alice Example"}, "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	prov, err := oidc.NewProvider(t.Context(), e.base)
	if err != nil {
		t.Fatal(err)
	}
	verify := prov.Verifier(&oidc.Config{ClientID: "diary"})
	type profile struct {
		Name              *string `json:"name"`
		PreferredUsername *string `json:"preferred_username"`
		FHIRUser          string  `json:"fhirUser"`
	}
	claimsOf := func(tok *oauth2.Token) profile {
		t.Helper()
		raw, _ := tok.Extra("id_token").(string)
		idt, err := verify.Verify(t.Context(), raw)
		if err != nil {
			t.Fatalf("id_token: %v", err)
		}
		var p profile
		if err := idt.Claims(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	login := func(scopes ...string) (*oauth2.Config, *oauth2.Token) {
		t.Helper()
		app := e.app("diary", redirect, scopes...)
		v := oauth2.GenerateVerifier()
		u := app.AuthCodeURL("st", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("aud", e.fhirBase))
		q, err := codeFrom(t, loginAs(t, newBrowser(t, redirect), u, "pat", ""))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := app.Exchange(t.Context(), q.Get("code"), oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		return app, tok
	}

	_, tok := login("openid", "profile", "offline_access", "patient/Observation.rs")
	p := claimsOf(tok)
	if p.Name == nil || *p.Name != "Alice Example" || p.PreferredUsername == nil || *p.PreferredUsername != "pat" {
		t.Errorf("profile claims = name %v preferred_username %v", p.Name, p.PreferredUsername)
	}
	if p.FHIRUser != "" {
		t.Errorf("fhirUser %q released without the fhirUser scope", p.FHIRUser)
	}
	st, body, _ := e.postForm("/auth/token", map[string][]string{
		"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {"diary"},
	}, nil)
	if st != http.StatusOK {
		t.Fatalf("refresh = %d %v", st, body)
	}
	refreshed := (&oauth2.Token{}).WithExtra(body)
	if p := claimsOf(refreshed); p.Name == nil || *p.Name != "Alice Example" {
		t.Errorf("refreshed id_token name = %v", p.Name)
	}

	_, tok = login("openid", "fhirUser", "patient/Observation.rs")
	p = claimsOf(tok)
	if p.Name != nil || p.PreferredUsername != nil {
		t.Errorf("profile claims released without the profile scope: name %v preferred_username %v", p.Name, p.PreferredUsername)
	}
	if p.FHIRUser != "Patient/a" {
		t.Errorf("fhirUser = %q", p.FHIRUser)
	}
}
