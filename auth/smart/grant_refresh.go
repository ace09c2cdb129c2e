package smart

import (
	"context"
	"net/http"
	"time"
)

// refreshGrant exchanges a refresh token, rotating it.
type refreshGrant struct{ s *Server }

var _ tokenHandler = (*refreshGrant)(nil)

func (*refreshGrant) grantType() string { return "refresh_token" }

func (h *refreshGrant) handle(ctx context.Context, r *http.Request, c *Client) (map[string]any, error) {
	rt := r.PostFormValue("refresh_token")
	if rt == "" {
		return nil, ErrInvalidRequest.WithDescription("refresh_token is required")
	}
	var g grant
	if err := h.s.kv.takeJSON(ctx, hashKey(pfxRefresh, rt), &g); err != nil {
		if notFound(err) {
			return nil, ErrInvalidGrant.WithDescription("unknown, expired or revoked refresh token")
		}
		return nil, err
	}
	if g.ClientID != c.ID {
		return nil, ErrInvalidGrant.WithDescription("the refresh token was issued to another client")
	}
	if sc := r.PostFormValue("scope"); sc != "" {
		if !scopeSubset(sc, g.Scope) {
			return nil, ErrInvalidScope.WithDescription("scope must be a subset of the original grant")
		}
		g.Scope = sc
	}
	// The new refresh token keeps the original deadline: refreshing does
	// not extend a grant forever.
	remaining := time.Unix(g.Expires, 0).Sub(h.s.now())
	if remaining <= 0 {
		return nil, ErrInvalidGrant.WithDescription("refresh token expired")
	}
	return h.s.issue(ctx, g, userTokenTTL, remaining)
}
