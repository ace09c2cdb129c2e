package smart

import (
	"context"
	"net/http"
	"strings"

	"github.com/anodyne-fhir/anodyne/auth"
)

// clientCredentialsGrant is SMART backend services: an asymmetric client
// (already authenticated by its private_key_jwt assertion) gets a short
// token for the system/ scopes it was pre-authorised for.
type clientCredentialsGrant struct{ s *Server }

var _ tokenHandler = (*clientCredentialsGrant)(nil)

func (*clientCredentialsGrant) grantType() string { return "client_credentials" }

func (h *clientCredentialsGrant) handle(ctx context.Context, r *http.Request, c *Client) (map[string]any, error) {
	if c.Type != ClientAsymmetric {
		return nil, ErrUnauthorizedClient.WithDescription("client_credentials needs a client authenticated with private_key_jwt")
	}
	requested := r.PostFormValue("scope")
	if requested == "" {
		return nil, ErrInvalidScope.WithDescription("scope is required")
	}
	var sys []string
	for _, sc := range auth.ParseScopes(grantable(c, requested)).Resource {
		if sc.Context == auth.ContextSystem {
			sys = append(sys, sc.Raw)
		}
	}
	if len(sys) == 0 {
		return nil, ErrInvalidScope.WithDescription("none of the requested system scopes is pre-authorised for this client")
	}
	return h.s.issue(ctx, grant{ClientID: c.ID, Scope: strings.Join(sys, " ")}, backendTokenTTL, 0)
}
