package smart

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// capabilities are advertised only for what this server really does.
var capabilities = []string{
	"launch-ehr", "launch-standalone", "authorize-post",
	"client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
	"sso-openid-connect", "context-banner",
	"context-ehr-patient", "context-ehr-encounter", "context-standalone-patient",
	"permission-offline", "permission-online", "permission-patient", "permission-user",
	"permission-v1", "permission-v2",
}

// scopesSupported are the non-resource scopes plus one example per context;
// every resource scope following the grammar is accepted.
var scopesSupported = []string{
	"openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access", "online_access",
	"patient/*.cruds", "user/*.cruds", "system/*.cruds", "patient/*.read", "user/*.read", "system/*.read",
}

func (s *Server) smartConfiguration(c echo.Context) error {
	openCORS(c.Response())
	return c.JSON(http.StatusOK, map[string]any{
		"issuer":                                           s.cfg.BaseURL,
		"jwks_uri":                                         s.url(pathJWKS),
		"authorization_endpoint":                           s.url(pathAuthorize),
		"token_endpoint":                                   s.url(pathToken),
		"introspection_endpoint":                           s.url(pathIntrospect),
		"revocation_endpoint":                              s.url(pathRevoke),
		"grant_types_supported":                            []string{"authorization_code", "client_credentials", "refresh_token"},
		"response_types_supported":                         []string{"code"},
		"code_challenge_methods_supported":                 []string{"S256"},
		"token_endpoint_auth_methods_supported":            []string{"client_secret_basic", "private_key_jwt"},
		"token_endpoint_auth_signing_alg_values_supported": []string{"RS384", "ES384"},
		"scopes_supported":                                 scopesSupported,
		"capabilities":                                     capabilities,
	})
}

func (s *Server) openIDConfiguration(c echo.Context) error {
	openCORS(c.Response())
	return c.JSON(http.StatusOK, map[string]any{
		"issuer":                                s.cfg.BaseURL,
		"authorization_endpoint":                s.url(pathAuthorize),
		"token_endpoint":                        s.url(pathToken),
		"jwks_uri":                              s.url(pathJWKS),
		"introspection_endpoint":                s.url(pathIntrospect),
		"revocation_endpoint":                   s.url(pathRevoke),
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"code_challenge_methods_supported":      []string{"S256"},
		"grant_types_supported":                 []string{"authorization_code", "client_credentials", "refresh_token"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "private_key_jwt"},
		"scopes_supported":                      scopesSupported,
		"claims_supported":                      []string{"iss", "sub", "aud", "exp", "iat", "fhirUser", "nonce"},
	})
}

func (s *Server) jwksHandler(c echo.Context) error {
	openCORS(c.Response())
	c.Response().Header().Set("Cache-Control", "public, max-age=300")
	return c.JSON(http.StatusOK, s.keys.publicJWKS())
}

// SecurityComponent is the CapabilityStatement rest.security element: the
// SMART-on-FHIR service coding and the oauth-uris extension, with the same
// URLs as the discovery document (SMART 1.0 clients still read it).
func (s *Server) SecurityComponent() map[string]any {
	ext := func(name, u string) map[string]any { return map[string]any{"url": name, "valueUri": u} }
	return map[string]any{
		"cors": true,
		"service": []any{map[string]any{
			"coding": []any{map[string]any{
				"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
				"code":   "SMART-on-FHIR",
			}},
			"text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
		}},
		"extension": []any{map[string]any{
			"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
			"extension": []any{
				ext("authorize", s.url(pathAuthorize)),
				ext("token", s.url(pathToken)),
				ext("introspect", s.url(pathIntrospect)),
				ext("revoke", s.url(pathRevoke)),
			},
		}},
	}
}
