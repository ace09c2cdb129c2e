package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/storage"
)

// ClaimMapping names the claims that carry SMART context in a trusted
// issuer's tokens. Empty fields take the SMART defaults.
type ClaimMapping struct {
	Scope     []string // tried in order; default "scope", then "scp"
	Patient   string   // default "patient"
	Encounter string   // default "encounter"
	FHIRUser  string   // default "fhirUser"
	ClientID  string   // default "client_id", then "azp"
	Purpose   string   // default "purpose_of_use"
	// ResearchProject names the claim that marks a research token with its
	// project; empty means this issuer's tokens are never research tokens.
	ResearchProject string
	// ResearchAccess names the claim carrying the access level ("rows" or
	// "aggregates"); read only with ResearchProject.
	ResearchAccess string
}

// TrustedIssuer is one authorization server whose access tokens the
// resource server accepts.
type TrustedIssuer struct {
	Issuer string
	// JWKSURL is fetched (and cached) by go-oidc; ignored when KeySet is set.
	JWKSURL string
	// KeySet verifies signatures directly (the built-in server passes its own).
	KeySet oidc.KeySet
	// Audience is the expected "aud": our FHIR base URL.
	Audience string
	Claims   ClaimMapping
	// Algs are the accepted signature algorithms (default RS256, RS384, ES256, ES384).
	Algs []string
	// Active, when set, reports an error for a token that verified but is no
	// longer live (revoked). The built-in server uses it; external issuers
	// are trusted until expiry.
	Active func(ctx context.Context, rawToken string) error
}

// ErrInvalidToken is returned for any token the resource server refuses.
var ErrInvalidToken = errors.New("auth: invalid token")

// Verifier turns bearer tokens into Principals. It is safe for concurrent
// use; it caches verified tokens (see tokenCache) per instance.
type Verifier struct {
	issuers map[string]issuer
	log     *slog.Logger
	cache   *tokenCache
	// now is the clock of both the expiry check and the cache; tests move it.
	now func() time.Time
}

type issuer struct {
	cfg TrustedIssuer
	v   *oidc.IDTokenVerifier
}

// NewVerifier builds a verifier over the trusted issuers. ctx bounds the
// lifetime of remote key fetching.
func NewVerifier(ctx context.Context, log *slog.Logger, trusted ...TrustedIssuer) (*Verifier, error) {
	if log == nil {
		log = slog.Default()
	}
	v := &Verifier{issuers: map[string]issuer{}, log: log, cache: newTokenCache(maxCachedTokens, maxCacheAge), now: time.Now}
	// go-oidc reads the clock through this closure so that it and the cache
	// always agree on the time.
	clock := func() time.Time { return v.now() }
	for _, t := range trusted {
		if t.Issuer == "" || t.Audience == "" {
			return nil, fmt.Errorf("auth: trusted issuer %q needs an issuer URL and an audience", t.Issuer)
		}
		if _, dup := v.issuers[t.Issuer]; dup {
			return nil, fmt.Errorf("auth: trusted issuer %q listed twice", t.Issuer)
		}
		ks := t.KeySet
		if ks == nil {
			if t.JWKSURL == "" {
				return nil, fmt.Errorf("auth: trusted issuer %q needs a JWKS URL or key set", t.Issuer)
			}
			ks = oidc.NewRemoteKeySet(ctx, t.JWKSURL)
		}
		algs := t.Algs
		if len(algs) == 0 {
			algs = []string{oidc.RS256, oidc.RS384, oidc.ES256, oidc.ES384}
		}
		ov := oidc.NewVerifier(t.Issuer, ks, &oidc.Config{ClientID: t.Audience, SupportedSigningAlgs: algs, Now: clock})
		v.issuers[t.Issuer] = issuer{cfg: t, v: ov}
	}
	return v, nil
}

// Verify checks signature, issuer, audience and expiry of an access token
// and maps its claims to a Principal. The signature and claim checks of a
// token already verified are reused (until its expiry, at most
// maxCacheAge); the issuer's liveness (revocation) check runs every time.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Principal, error) {
	key := tokenKey(raw)
	if cached := v.cache.get(key, v.now()); cached != nil {
		// Issuers are fixed at construction, so the one that verified the
		// token is still trusted.
		if err := v.active(ctx, v.issuers[cached.Issuer], raw); err != nil {
			return nil, err
		}
		p := *cached
		return &p, nil
	}
	p, err := v.verify(ctx, raw)
	if err != nil {
		return nil, err
	}
	cached := *p
	v.cache.put(key, &cached, v.now())
	return p, nil
}

func (v *Verifier) active(ctx context.Context, is issuer, raw string) error {
	if is.cfg.Active == nil {
		return nil
	}
	if err := is.cfg.Active(ctx, raw); err != nil {
		// A store that does not answer says nothing about the token: the
		// caller gets a 503 to retry, not a 401 that makes an app drop a
		// valid token and send its user through sign-in again.
		if errors.Is(err, storage.ErrUnavailable) {
			return fmt.Errorf("checking whether the token is revoked: %w", err)
		}
		return fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return nil
}

// verify is the full, uncached verification.
func (v *Verifier) verify(ctx context.Context, raw string) (*Principal, error) {
	iss, err := unverifiedIssuer(raw)
	if err != nil {
		return nil, err
	}
	is, ok := v.issuers[iss]
	if !ok {
		return nil, fmt.Errorf("%w: issuer %q is not trusted", ErrInvalidToken, iss)
	}
	tok, err := is.v.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %w", ErrInvalidToken, err)
	}
	if err := v.active(ctx, is, raw); err != nil {
		return nil, err
	}
	m := is.cfg.Claims
	p := &Principal{
		Issuer:    iss,
		Subject:   tok.Subject,
		ExpiresAt: tok.Expiry,
		Patient:   str(claims, or(m.Patient, "patient")),
		Encounter: str(claims, or(m.Encounter, "encounter")),
		FHIRUser:  str(claims, or(m.FHIRUser, "fhirUser")),
		Purpose:   str(claims, or(m.Purpose, "purpose_of_use")),
		TokenID:   str(claims, "jti"),
	}
	if m.ResearchProject != "" {
		if p.ResearchProject = str(claims, m.ResearchProject); p.ResearchProject != "" {
			if err := ValidResearchProject(p.ResearchProject); err != nil {
				return nil, fmt.Errorf("%w: claim %s: %w", ErrInvalidToken, m.ResearchProject, err)
			}
			p.ResearchAccess = ResearchRows
			if m.ResearchAccess != "" && str(claims, m.ResearchAccess) == ResearchAggregates {
				p.ResearchAccess = ResearchAggregates
			}
		}
	}
	if m.ClientID != "" {
		p.ClientID = str(claims, m.ClientID)
	} else if p.ClientID = str(claims, "client_id"); p.ClientID == "" {
		p.ClientID = str(claims, "azp")
	}
	names := m.Scope
	if len(names) == 0 {
		names = []string{"scope", "scp"}
	}
	for _, n := range names {
		if s := scopeClaim(claims[n]); s != "" {
			p.Scopes = ParseScopes(s)
			break
		}
	}
	return p, nil
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func str(claims map[string]any, name string) string {
	s, _ := claims[name].(string)
	return s
}

// scopeClaim accepts both spellings seen in the wild: a space-separated
// string (RFC 9068, Keycloak) and an array of strings (some IdPs' "scp").
func scopeClaim(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				parts = append(parts, s)
			}
		}
		return strings.Join(parts, " ")
	}
	return ""
}

// unverifiedIssuer reads "iss" before verification, only to pick the
// issuer whose keys will then verify the token.
func unverifiedIssuer(raw string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("%w: not a compact JWS", ErrInvalidToken)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("%w: payload: %w", ErrInvalidToken, err)
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", fmt.Errorf("%w: payload: %w", ErrInvalidToken, err)
	}
	return c.Iss, nil
}

// BearerToken extracts the token of an "Authorization: Bearer" header.
func BearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	t := strings.TrimSpace(h[7:])
	return t, t != ""
}

// DefaultPublic lists the routes reachable without a token: discovery,
// the CapabilityStatement, the authorization server's own endpoints (which
// authenticate clients themselves) and health checks.
func DefaultPublic(r *http.Request) bool {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/.well-known/"),
		strings.HasPrefix(p, "/auth/"),
		p == "/fhir/metadata",
		strings.HasPrefix(p, "/fhir/.well-known/"),
		p == "/healthz", p == "/readyz":
		return true
	}
	return r.Method == http.MethodOptions // CORS preflight carries no token
}

// Middleware verifies the bearer token of every non-public request and
// puts the Principal on the request context. public may be nil (DefaultPublic).
func (v *Verifier) Middleware(realm string, public func(*http.Request) bool) echo.MiddlewareFunc {
	if public == nil {
		public = DefaultPublic
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			if public(r) {
				return next(c)
			}
			raw, ok := BearerToken(r)
			if !ok {
				WriteUnauthorized(c.Response(), realm, "", "a bearer access token is required")
				return nil
			}
			p, err := v.Verify(r.Context(), raw)
			if errors.Is(err, storage.ErrUnavailable) {
				v.log.WarnContext(r.Context(), "bearer token not checked: the store does not answer", "err", err, "path", r.URL.Path)
				WriteUnavailable(c.Response(), "the token cannot be checked now: the database does not answer; retry later")
				return nil
			}
			if err != nil {
				v.log.InfoContext(r.Context(), "bearer token refused", "err", err, "path", r.URL.Path)
				WriteUnauthorized(c.Response(), realm, "invalid_token", "the access token is invalid, expired or revoked")
				return nil
			}
			c.SetRequest(r.WithContext(WithPrincipal(r.Context(), p)))
			return next(c)
		}
	}
}
