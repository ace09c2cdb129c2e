package smart

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
)

// refreshGrant exchanges a refresh token, rotating it.
type refreshGrant struct{ s *Server }

var _ tokenHandler = (*refreshGrant)(nil)

func (*refreshGrant) grantType() string { return "refresh_token" }

// handle checks everything before it consumes the refresh token: a refused
// request (another client, a wider scope, an expired grant) leaves the
// app's offline access intact. The consumption itself is one atomic Take,
// so of two concurrent refreshes of one token only one gets new tokens.
func (h *refreshGrant) handle(ctx context.Context, r *http.Request, c *Client) (map[string]any, error) {
	rt := r.PostFormValue("refresh_token")
	if rt == "" {
		return nil, ErrInvalidRequest.WithDescription("refresh_token is required")
	}
	key := hashKey(pfxRefresh, rt)
	g, err := h.s.refreshRecord(ctx, key)
	if err != nil {
		return nil, err
	}
	if g.ClientID != c.ID {
		return nil, ErrInvalidGrant.WithDescription("the refresh token was issued to another client")
	}
	// The new refresh token keeps the original deadline: refreshing does
	// not extend a grant forever.
	remaining := time.Unix(g.Expires, 0).Sub(h.s.now())
	if remaining <= 0 {
		return nil, ErrInvalidGrant.WithDescription("refresh token expired")
	}
	if g.Granted == "" {
		g.Granted = g.Scope
	}
	if sc := r.PostFormValue("scope"); sc != "" {
		if !scopeSubset(sc, g.Granted) {
			return nil, ErrInvalidScope.WithDescription("scope must be a subset of the original grant")
		}
		g.Scope = sc
	} else {
		g.Scope = g.Granted
	}
	if _, err := h.s.kv.Take(ctx, key); err != nil {
		if notFound(err) {
			return nil, ErrInvalidGrant.WithDescription("the refresh token was already used")
		}
		return nil, fmt.Errorf("consume refresh token: %w", err)
	}
	return h.s.issue(ctx, g, userTokenTTL, remaining)
}

func (s *Server) refreshRecord(ctx context.Context, key string) (grant, error) {
	var g grant
	if err := s.kv.getJSON(ctx, key, &g); err != nil {
		if notFound(err) {
			return g, ErrInvalidGrant.WithDescription("unknown, expired or revoked refresh token")
		}
		return g, err
	}
	return g, nil
}

// refreshClient identifies the client of a refresh request that carries no
// client identification at all (fhirclient's default refresh sends only
// grant_type and refresh_token; SMART App Launch allows it for public
// clients). The refresh token's record names the client; a confidential
// client must still authenticate.
func (s *Server) refreshClient(ctx context.Context, r *http.Request) (*Client, error) {
	rt := r.PostFormValue("refresh_token")
	if rt == "" {
		return nil, ErrInvalidClient.WithDescription("client authentication is required")
	}
	g, err := s.refreshRecord(ctx, hashKey(pfxRefresh, rt))
	if err != nil {
		return nil, err
	}
	return s.publicClient(ctx, g.ClientID)
}

// noClientIdentification reports a request without any client
// authentication or client_id.
func noClientIdentification(r *http.Request) bool {
	_, _, basic := r.BasicAuth()
	return !basic && r.PostFormValue("client_id") == "" &&
		r.PostFormValue("client_assertion") == "" && r.PostFormValue("client_assertion_type") == ""
}

// scopeSubset reports whether every requested scope is granted: resource
// scopes semantically (patient/Observation.rs under patient/*.rs, v1
// patient/Observation.read under patient/*.read), others literally.
func scopeSubset(requested, granted string) bool {
	have := auth.ParseScopes(granted)
	want := auth.ParseScopes(requested)
	if len(want.Malformed) > 0 {
		return false
	}
	for _, o := range want.Other {
		if !have.Has(o) {
			return false
		}
	}
	for _, w := range want.Resource {
		covered := false
		for _, h := range have.Resource {
			if h.Covers(w) {
				covered = true
				break
			}
		}
		if !covered {
			return false
		}
	}
	return true
}
