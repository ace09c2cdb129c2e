package smart

import (
	"context"
	"net/http"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/labstack/echo/v4"
)

// introspect is RFC 7662. The caller must be an authenticated client or
// present one of our access tokens; inactive tokens get {"active": false}
// and nothing else.
func (s *Server) introspect(c echo.Context) error {
	r := c.Request()
	ctx := r.Context()
	s.tokenCORS(c)
	if err := r.ParseForm(); err != nil {
		writeOAuthError(c.Response(), ErrInvalidRequest.WithDescription("the body must be a form"))
		return nil
	}
	if raw, ok := auth.BearerToken(r); ok {
		if _, err := s.verifier.Verify(ctx, raw); err != nil {
			auth.WriteUnauthorized(c.Response(), s.cfg.BaseURL, "invalid_token", "the bearer token is invalid")
			return nil
		}
	} else if _, err := s.authenticateClient(r); err != nil {
		writeOAuthError(c.Response(), err)
		return nil
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	tok := r.PostFormValue("token")
	if tok == "" {
		writeOAuthError(c.Response(), ErrInvalidRequest.WithDescription("token is required"))
		return nil
	}
	resp, err := s.introspection(ctx, tok)
	if err != nil {
		s.log.ErrorContext(ctx, "introspection", "err", err)
		writeOAuthError(c.Response(), err)
		return nil
	}
	writeJSON(c.Response(), http.StatusOK, resp)
	return nil
}

func (s *Server) introspection(ctx context.Context, tok string) (map[string]any, error) {
	inactive := map[string]any{"active": false}
	var g grant
	kind := "access_token"
	err := s.kv.getJSON(ctx, hashKey(pfxAccess, tok), &g)
	if notFound(err) {
		kind = "refresh_token"
		err = s.kv.getJSON(ctx, hashKey(pfxRefresh, tok), &g)
	}
	if notFound(err) {
		return inactive, nil
	}
	if err != nil {
		return nil, err
	}
	if g.Expires <= s.now().Unix() {
		return inactive, nil
	}
	if kind == "access_token" {
		// The record alone could outlive a key that no longer verifies.
		if _, err := s.keys.VerifySignature(ctx, tok); err != nil {
			return inactive, nil
		}
	}
	resp := map[string]any{
		"active": true, "scope": g.Scope, "client_id": g.ClientID, "exp": g.Expires, "iat": g.Issued,
		"iss": s.cfg.BaseURL, "token_type": "Bearer", "aud": s.cfg.FHIRBase,
	}
	if kind == "refresh_token" {
		resp["token_type"] = "refresh_token"
	}
	if g.Subject != "" {
		resp["sub"] = g.Subject
	} else {
		resp["sub"] = g.ClientID
	}
	if g.FHIRUser != "" {
		resp["fhirUser"] = g.FHIRUser
	}
	contextFields(resp, g)
	return resp, nil
}

// revoke is RFC 7009: the client revokes one of its own access or refresh
// tokens. Unknown tokens are not an error.
func (s *Server) revoke(c echo.Context) error {
	r := c.Request()
	ctx := r.Context()
	s.tokenCORS(c)
	if err := r.ParseForm(); err != nil {
		writeOAuthError(c.Response(), ErrInvalidRequest.WithDescription("the body must be a form"))
		return nil
	}
	client, err := s.authenticateClient(r)
	if err != nil {
		writeOAuthError(c.Response(), err)
		return nil
	}
	tok := r.PostFormValue("token")
	if tok == "" {
		writeOAuthError(c.Response(), ErrInvalidRequest.WithDescription("token is required"))
		return nil
	}
	for _, pfx := range []string{pfxAccess, pfxRefresh} {
		key := hashKey(pfx, tok)
		var g grant
		if err := s.kv.getJSON(ctx, key, &g); err != nil {
			if notFound(err) {
				continue
			}
			s.log.ErrorContext(ctx, "revoke: load token", "err", err)
			writeOAuthError(c.Response(), ErrServerError)
			return nil
		}
		if g.ClientID != client.ID {
			continue // RFC 7009 2.1: only the owner may revoke; say nothing.
		}
		if err := s.kv.Delete(ctx, key); err != nil {
			s.log.ErrorContext(ctx, "revoke: delete token", "err", err)
			writeOAuthError(c.Response(), ErrServerError)
			return nil
		}
	}
	return c.NoContent(http.StatusOK)
}
