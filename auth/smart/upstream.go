package smart

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/url"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/labstack/echo/v4"
	"golang.org/x/oauth2"
)

// UpstreamOIDC is an enterprise OpenID Connect provider (Okta, Entra ID,
// Keycloak) users may sign in with instead of a local account. Register
// BaseURL+"/auth/upstream/callback" as the redirect URI at the provider.
type UpstreamOIDC struct {
	Name         string // shown on the login page
	Issuer       string
	ClientID     string
	ClientSecret string
	Scopes       []string // default openid profile
	// FHIRUserClaim, when the provider can emit it, names the claim that
	// holds the FHIR user ("Practitioner/123"). Otherwise users are mapped
	// with Server.LinkFederatedUser.
	FHIRUserClaim string
}

type upstream struct {
	cfg      UpstreamOIDC
	oauth    oauth2.Config
	verifier *oidc.IDTokenVerifier
	client   *http.Client
}

// upstreamState is kept between the redirect to the provider and its callback.
type upstreamState struct {
	Req      string `json:"req"`
	Verifier string `json:"verifier"`
	Nonce    string `json:"nonce"`
}

func newUpstream(ctx context.Context, s *Server, cfg UpstreamOIDC) (*upstream, error) {
	if cfg.Name == "" {
		cfg.Name = cfg.Issuer
	}
	ctx = oidc.ClientContext(ctx, s.cfg.HTTPClient)
	p, err := oidc.NewProvider(ctx, cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("discover %s: %w", cfg.Issuer, err)
	}
	scopes := cfg.Scopes
	if len(scopes) == 0 {
		scopes = []string{oidc.ScopeOpenID, "profile"}
	}
	return &upstream{
		cfg: cfg,
		oauth: oauth2.Config{
			ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, Endpoint: p.Endpoint(),
			RedirectURL: s.url(pathUpCallback), Scopes: scopes,
		},
		verifier: p.Verifier(&oidc.Config{ClientID: cfg.ClientID}),
		client:   s.cfg.HTTPClient,
	}, nil
}

// upstreamStart sends the browser to the provider (authorization code +
// PKCE S256 + nonce). The pending authorize request must belong to this
// browser (its CSRF cookie).
func (s *Server) upstreamStart(c echo.Context) error {
	if s.upstream == nil {
		return s.errorPage(c, http.StatusNotFound, "No enterprise sign-in is configured.")
	}
	id, req, err := s.loadRequest(c, false)
	if err != nil {
		return s.pageError(c, err)
	}
	ck, err := c.Cookie(csrfCookieName(id))
	if err != nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(req.CSRF)) != 1 {
		return s.pageError(c, errBadCSRF)
	}
	st := upstreamState{Req: id, Verifier: oauth2.GenerateVerifier(), Nonce: randomToken(16)}
	state := randomToken(24)
	if err := s.kv.putJSON(c.Request().Context(), hashKey(pfxUpstream, state), st, requestTTL); err != nil {
		return s.pageError(c, err)
	}
	u := s.upstream.oauth.AuthCodeURL(state, oauth2.S256ChallengeOption(st.Verifier), oidc.Nonce(st.Nonce))
	return c.Redirect(http.StatusFound, u)
}

// upstreamCallback finishes the upstream sign-in and maps the user to a
// FHIR user, then continues the SMART flow (picker, consent).
func (s *Server) upstreamCallback(c echo.Context) error {
	if s.upstream == nil {
		return s.errorPage(c, http.StatusNotFound, "No enterprise sign-in is configured.")
	}
	r := c.Request()
	ctx := r.Context()
	var st upstreamState
	if err := s.kv.takeJSON(ctx, hashKey(pfxUpstream, c.QueryParam("state")), &st); err != nil {
		if notFound(err) {
			return s.pageError(c, errBadCSRF)
		}
		return s.pageError(c, err)
	}
	var req authzRequest
	if err := s.kv.getJSON(ctx, hashKey(pfxRequest, st.Req), &req); err != nil {
		return s.pageError(c, errBadCSRF)
	}
	if e := c.QueryParam("error"); e != "" {
		_ = s.kv.Delete(ctx, hashKey(pfxRequest, st.Req))
		return redirectError(c, req.RedirectURI, req.State, ErrAccessDenied.WithDescription("enterprise sign-in failed: "+e))
	}
	octx := oidc.ClientContext(ctx, s.upstream.client)
	tok, err := s.upstream.oauth.Exchange(octx, c.QueryParam("code"), oauth2.VerifierOption(st.Verifier))
	if err != nil {
		s.log.WarnContext(ctx, "upstream code exchange", "err", err)
		return s.errorPage(c, http.StatusBadGateway, "The enterprise sign-in could not be completed.")
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := s.upstream.verifier.Verify(octx, rawID)
	if err != nil || idt.Nonce != st.Nonce {
		s.log.WarnContext(ctx, "upstream id_token refused", "err", err)
		return s.errorPage(c, http.StatusBadGateway, "The enterprise sign-in returned an invalid identity.")
	}
	acct, err := s.federatedAccount(ctx, idt)
	if err != nil {
		s.log.InfoContext(ctx, "federated user not mapped", "iss", idt.Issuer, "sub", idt.Subject, "err", err)
		_ = s.kv.Delete(ctx, hashKey(pfxRequest, st.Req))
		return redirectError(c, req.RedirectURI, req.State, ErrAccessDenied.WithDescription("this user has no access to clinical data here"))
	}
	// The subject we issue is scoped by the provider so that two providers'
	// users can never collide.
	sub := url.QueryEscape(idt.Issuer) + "|" + idt.Subject
	return s.signedIn(c, st.Req, &req, sub, acct)
}

func (s *Server) federatedAccount(ctx context.Context, idt *oidc.IDToken) (*Account, error) {
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("upstream claims: %w", err)
	}
	// The provider's own profile claims fill in what the mapping lacks.
	withProfile := func(a *Account) *Account {
		if a.Name == "" {
			a.Name, _ = claims["name"].(string)
		}
		if a.Username == "" {
			a.Username, _ = claims["preferred_username"].(string)
		}
		return a
	}
	var a Account
	err := s.kv.getJSON(ctx, federatedKey(idt.Issuer, idt.Subject), &a)
	if err == nil {
		return withProfile(&a), nil
	}
	if !notFound(err) {
		return nil, err
	}
	if s.upstream.cfg.FHIRUserClaim != "" {
		if fu, _ := claims[s.upstream.cfg.FHIRUserClaim].(string); fu != "" {
			if err := checkFHIRUser(fu); err != nil {
				return nil, err
			}
			return withProfile(&Account{FHIRUser: fu}), nil
		}
	}
	return nil, fmt.Errorf("no mapping for %s|%s", idt.Issuer, idt.Subject)
}
