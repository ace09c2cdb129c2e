package smart

import (
	"context"
	"fmt"
	"net/http"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/labstack/echo/v4"
)

// introspect is RFC 7662. The caller must be an authenticated client or
// present one of our access tokens. A caller learns about a token only when
// the token is its own (same client_id) or when it is a confidential client
// registered as a resource server; anyone else gets {"active": false}, the
// same answer as for an unknown token, so introspection is neither a window
// on other apps' patients and users nor an oracle on which tokens exist
// (RFC 7662 section 4).
func (s *Server) introspect(c echo.Context) error {
	r := c.Request()
	ctx := r.Context()
	s.tokenCORS(c)
	if err := r.ParseForm(); err != nil {
		writeOAuthError(c.Response(), ErrInvalidRequest.WithDescription("the body must be a form"))
		return nil
	}
	var callerID string
	resourceServer := false
	if raw, ok := auth.BearerToken(r); ok {
		p, err := s.verifier.Verify(ctx, raw)
		if err != nil {
			auth.WriteUnauthorized(c.Response(), s.cfg.BaseURL, "invalid_token", "the bearer token is invalid")
			return nil
		}
		callerID = p.ClientID
	} else {
		cl, err := s.authenticateClient(r)
		if err != nil {
			writeOAuthError(c.Response(), err)
			return nil
		}
		callerID = cl.ID
		// A bare public client_id authenticates nobody: it may only see
		// tokens it already holds and that name it.
		resourceServer = cl.ResourceServer && cl.Type != ClientPublic
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
	if resp["active"] == true && !resourceServer && resp["client_id"] != callerID {
		resp = map[string]any{"active": false}
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
	if revoked, err := s.grantRevoked(ctx, g); err != nil || revoked {
		return inactive, err
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
		if pfx == pfxRefresh {
			// RFC 7009 2.1: revoking a refresh token revokes the access
			// tokens of the same grant. The mark is written before the
			// refresh token goes, so a failure leaves the token revocable.
			if err := s.revokeGrant(ctx, g); err != nil {
				s.log.ErrorContext(ctx, "revoke: mark grant", "err", err)
				writeOAuthError(c.Response(), ErrServerError)
				return nil
			}
		}
		if err := s.kv.Delete(ctx, key); err != nil && !notFound(err) {
			s.log.ErrorContext(ctx, "revoke: delete token", "err", err)
			writeOAuthError(c.Response(), ErrServerError)
			return nil
		}
	}
	return c.NoContent(http.StatusOK)
}

// revokeGrant marks g's grant revoked for as long as any access token of it
// can live; its refresh token is deleted by the caller, so no new access
// token of the grant can be minted after that.
func (s *Server) revokeGrant(ctx context.Context, g grant) error {
	if g.GrantID == "" {
		return nil // issued before grants had ids; only the token itself goes
	}
	if err := s.kv.Put(ctx, pfxRevoked+g.GrantID, []byte{1}, userTokenTTL+clockSkew); err != nil {
		return fmt.Errorf("mark grant revoked: %w", err)
	}
	return nil
}

// grantRevoked reports whether the token record's grant was revoked.
func (s *Server) grantRevoked(ctx context.Context, g grant) (bool, error) {
	if g.GrantID == "" {
		return false, nil
	}
	if _, err := s.kv.Get(ctx, pfxRevoked+g.GrantID); err != nil {
		if notFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("check grant revocation: %w", err)
	}
	return true, nil
}
