package smart

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"
)

// codeGrant exchanges an authorization code, checking PKCE S256.
type codeGrant struct{ s *Server }

var _ tokenHandler = (*codeGrant)(nil)

func (*codeGrant) grantType() string { return "authorization_code" }

func (h *codeGrant) handle(ctx context.Context, r *http.Request, c *Client) (map[string]any, error) {
	code := r.PostFormValue("code")
	if code == "" {
		return nil, ErrInvalidRequest.WithDescription("code is required")
	}
	verifier := r.PostFormValue("code_verifier")
	if verifier == "" {
		return nil, ErrInvalidRequest.WithDescription("code_verifier is required")
	}
	// Taking the code first makes it single-use even when the request
	// fails below: a code that was tried with a wrong verifier is burnt.
	var g grant
	if err := h.s.kv.takeJSON(ctx, hashKey(pfxCode, code), &g); err != nil {
		if notFound(err) {
			return nil, ErrInvalidGrant.WithDescription("unknown, expired or already used code")
		}
		return nil, err
	}
	if g.ClientID != c.ID {
		return nil, ErrInvalidGrant.WithDescription("the code was issued to another client")
	}
	if r.PostFormValue("redirect_uri") != g.RedirectURI {
		return nil, ErrInvalidGrant.WithDescription("redirect_uri does not match the authorize request")
	}
	if !validVerifier(verifier) {
		return nil, ErrInvalidGrant.WithDescription("code_verifier is malformed")
	}
	sum := sha256.Sum256([]byte(verifier))
	if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(g.Challenge)) != 1 {
		return nil, ErrInvalidGrant.WithDescription("code_verifier does not match the code_challenge")
	}
	return h.s.issue(ctx, g, userTokenTTL, refreshLifetime(g))
}

// validVerifier follows RFC 7636 4.1: 43 to 128 unreserved characters.
func validVerifier(v string) bool {
	return len(v) >= 43 && len(v) <= 128 && strings.Trim(v, base64URLAlphabet+".~") == ""
}
