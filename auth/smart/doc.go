// Package smart is Anodyne's built-in SMART App Launch 2.2 authorization
// server: discovery documents, the authorize endpoint with its login,
// patient-picker and consent pages (plain HTML forms), the token endpoint
// (one small handler per grant: authorization code with PKCE S256,
// refresh token, client credentials with private_key_jwt), introspection,
// revocation, the JWKS, EHR launch contexts, federation to an upstream
// enterprise OpenID Connect provider, and client registration.
//
// All of its state (clients, accounts, launch contexts, codes, tokens,
// used assertion jtis, signing keys) lives in a storage.KV under "auth/",
// tokens keyed by their SHA-256, never raw. It must not know about FHIR
// resources or the FHIR REST layer: the resource server side (verifying
// tokens, deciding access) is package auth, which this package feeds
// through TrustedIssuer.
package smart
