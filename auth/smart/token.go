package smart

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/labstack/echo/v4"
)

// tokenHandler handles one grant type at the token endpoint (one file per
// grant). The client is already authenticated when handle is called.
type tokenHandler interface {
	grantType() string
	handle(ctx context.Context, r *http.Request, c *Client) (map[string]any, error)
}

func (s *Server) token(c echo.Context) error {
	r := c.Request()
	s.tokenCORS(c)
	if err := r.ParseForm(); err != nil {
		writeOAuthError(c.Response(), ErrInvalidRequest.WithDescription("the body must be a form"))
		return nil
	}
	h, ok := s.handlers[r.PostFormValue("grant_type")]
	if !ok {
		s.tokenOutcome("unsupported", ErrUnsupportedGrantType)
		writeOAuthError(c.Response(), ErrUnsupportedGrantType.WithDescription("unsupported grant_type"))
		return nil
	}
	var client *Client
	var err error
	if h.grantType() == "refresh_token" && noClientIdentification(r) {
		client, err = s.refreshClient(r.Context(), r)
	} else {
		client, err = s.authenticateClient(r)
	}
	if err != nil {
		s.logOAuth(r.Context(), "token: client authentication failed", err)
		s.tokenOutcome(h.grantType(), err)
		writeOAuthError(c.Response(), err)
		return nil
	}
	resp, err := h.handle(r.Context(), r, client)
	if err != nil {
		s.logOAuth(r.Context(), "token: request refused", err, "client", client.ID, "grant", h.grantType())
		s.tokenOutcome(h.grantType(), err)
		writeOAuthError(c.Response(), err)
		return nil
	}
	s.tokenOutcome(h.grantType(), nil)
	hd := c.Response().Header()
	hd.Set("Cache-Control", "no-store")
	hd.Set("Pragma", "no-cache")
	writeJSON(c.Response(), http.StatusOK, resp)
	return nil
}

// tokenOutcome tells Config.OnToken how the token endpoint answered:
// "issued", or the OAuth error code ("server_error" for other failures).
func (s *Server) tokenOutcome(grant string, err error) {
	if s.onToken == nil {
		return
	}
	outcome := "issued"
	if err != nil {
		outcome = "server_error"
		var oe *OAuthError
		if errors.As(err, &oe) {
			outcome = oe.Code
		}
	}
	s.onToken(grant, outcome)
}

func (s *Server) logOAuth(ctx context.Context, msg string, err error, args ...any) {
	var oe *OAuthError
	if errors.As(err, &oe) {
		s.log.InfoContext(ctx, msg, append(args, "error", oe.Code, "description", oe.Description)...)
		return
	}
	s.log.ErrorContext(ctx, msg, append(args, "err", err)...)
}

// tokenCORS lets a registered browser origin call the token endpoint.
func (s *Server) tokenCORS(c echo.Context) {
	if o := c.Request().Header.Get("Origin"); o != "" && s.allowedOrigin(c.Request(), o) {
		c.Response().Header().Set("Access-Control-Allow-Origin", o)
		c.Response().Header().Add("Vary", "Origin")
	}
}

// accessClaims are the claims of our access tokens (RFC 9068 style plus
// the SMART launch context).
type accessClaims struct {
	Issuer    string `json:"iss"`
	Subject   string `json:"sub"`
	Audience  string `json:"aud"`
	Expiry    int64  `json:"exp"`
	IssuedAt  int64  `json:"iat"`
	ID        string `json:"jti"`
	ClientID  string `json:"client_id"`
	Scope     string `json:"scope"`
	Patient   string `json:"patient,omitempty"`
	Encounter string `json:"encounter,omitempty"`
	FHIRUser  string `json:"fhirUser,omitempty"`
	// Research marks tokens of research clients (auth.Principal.ResearchProject).
	ResearchProject string `json:"research_project,omitempty"`
	ResearchAccess  string `json:"research_access,omitempty"`
}

// issue mints an access token for g (and an id_token and a refresh token
// when the grant allows them) and returns the token response body.
func (s *Server) issue(ctx context.Context, g grant, ttl time.Duration, refreshTTL time.Duration) (map[string]any, error) {
	now := s.now()
	exp := now.Add(ttl)
	sub := g.Subject
	if sub == "" {
		sub = g.ClientID
	}
	claims := accessClaims{
		Issuer: s.cfg.BaseURL, Subject: sub, Audience: s.cfg.FHIRBase, Expiry: exp.Unix(), IssuedAt: now.Unix(),
		ID: randomToken(16), ClientID: g.ClientID, Scope: g.Scope,
		Patient: g.Context.Patient, Encounter: g.Context.Encounter, FHIRUser: g.FHIRUser,
	}
	// The research marking is read from the registration at every issue
	// (refresh included), so changing a client's project takes effect
	// with its next token.
	if cl, err := s.clients.Get(ctx, g.ClientID); err == nil && cl.ResearchProject != "" {
		claims.ResearchProject = cl.ResearchProject
		claims.ResearchAccess = cl.ResearchAccess
		if claims.ResearchAccess == "" {
			claims.ResearchAccess = auth.ResearchRows
		}
	}
	at, err := s.keys.sign(claims)
	if err != nil {
		return nil, fmt.Errorf("sign access token: %w", err)
	}
	sc := auth.ParseScopes(g.Scope)
	resp := map[string]any{
		"access_token": at,
		"token_type":   "Bearer",
		"expires_in":   int64(ttl / time.Second),
		"scope":        g.Scope,
	}
	contextFields(resp, g)
	if sc.Has("openid") && (sc.Has("fhirUser") || sc.Has("profile")) && g.Subject != "" {
		idt := map[string]any{
			"iss": s.cfg.BaseURL, "sub": g.Subject, "aud": g.ClientID, "exp": exp.Unix(), "iat": now.Unix(),
		}
		if g.Nonce != "" {
			idt["nonce"] = g.Nonce
		}
		if g.FHIRUser != "" && sc.Has("fhirUser") {
			idt["fhirUser"] = g.FHIRUser
		}
		if g.Profile != nil && sc.Has("profile") {
			if g.Profile.Name != "" {
				idt["name"] = g.Profile.Name
			}
			if g.Profile.PreferredUsername != "" {
				idt["preferred_username"] = g.Profile.PreferredUsername
			}
		}
		if resp["id_token"], err = s.keys.sign(idt); err != nil {
			return nil, fmt.Errorf("sign id_token: %w", err)
		}
		g.IDToken = true
	}
	g.Issued, g.Expires = now.Unix(), exp.Unix()
	if g.GrantID == "" {
		g.GrantID = randomToken(16)
	}
	rec := g
	rec.RedirectURI, rec.Challenge, rec.Nonce, rec.Granted = "", "", "", ""
	if err := s.kv.putJSON(ctx, hashKey(pfxAccess, at), rec, ttl+clockSkew); err != nil {
		return nil, err
	}
	if refreshTTL > 0 {
		rt := randomToken(32)
		rec.Expires = now.Add(refreshTTL).Unix()
		// The refresh token keeps the whole approved grant (RFC 6749 6: a
		// refresh may ask for any scope "originally granted"), even when this
		// access token was narrowed.
		if g.Granted != "" {
			rec.Scope = g.Granted
		}
		if err := s.kv.putJSON(ctx, hashKey(pfxRefresh, rt), rec, refreshTTL); err != nil {
			return nil, err
		}
		resp["refresh_token"] = rt
	}
	return resp, nil
}

// contextFields adds the launch context to a token or introspection response.
func contextFields(resp map[string]any, g grant) {
	lc := g.Context
	if lc.Patient != "" {
		resp["patient"] = lc.Patient
		banner := true
		if lc.NeedBanner != nil {
			banner = *lc.NeedBanner
		}
		resp["need_patient_banner"] = banner
	}
	if lc.Encounter != "" {
		resp["encounter"] = lc.Encounter
	}
	if len(lc.FHIRContext) > 0 {
		resp["fhirContext"] = lc.FHIRContext
	}
	if lc.StyleURL != "" {
		resp["smart_style_url"] = lc.StyleURL
	}
	if lc.Intent != "" {
		resp["intent"] = lc.Intent
	}
	if lc.Tenant != "" {
		resp["tenant"] = lc.Tenant
	}
}

// refreshLifetime decides whether a grant gets a refresh token:
// offline_access on any launch, online_access on an EHR launch.
func refreshLifetime(g grant) time.Duration {
	sc := auth.ParseScopes(g.Scope)
	switch {
	case sc.Has("offline_access"):
		return offlineTTL
	case sc.Has("online_access") && g.EHR:
		return onlineTTL
	}
	return 0
}
