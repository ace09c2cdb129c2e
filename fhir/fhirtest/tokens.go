package fhirtest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/anodyne-fhir/anodyne/auth"
)

// Issuer is an authorization server's signing side for tests: it signs
// SMART access tokens (RS256 JWTs) that auth.Verifier checks for real,
// so that a test drives the server's token verification and the one
// decision point with real tokens rather than WithPrincipal.
type Issuer struct {
	URL string
	key *rsa.PrivateKey
}

// NewIssuer makes an issuer named url with a fresh 2048-bit key.
func NewIssuer(t testing.TB, url string) *Issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("fhirtest: issuer key: %v", err)
	}
	return &Issuer{URL: url, key: key}
}

// Token signs an access token for aud with scope; claims adds or
// replaces claims (patient, client_id, fhirUser, exp...). Defaults: sub
// "test-user", client_id "test-client", an hour of validity.
func (is *Issuer) Token(t testing.TB, aud, scope string, claims map[string]any) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: is.key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatalf("fhirtest: signer: %v", err)
	}
	now := time.Now()
	c := map[string]any{"iss": is.URL, "sub": "test-user", "aud": aud, "scope": scope, "client_id": "test-client",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	raw, err := jwt.Signed(sig).Claims(c).Serialize()
	if err != nil {
		t.Fatalf("fhirtest: signing a token: %v", err)
	}
	return raw
}

// Verifier trusts this issuer's tokens for audience (a FHIR base).
func (is *Issuer) Verifier(t testing.TB, audience string) *auth.Verifier {
	t.Helper()
	v, err := auth.NewVerifier(context.Background(), nil, auth.TrustedIssuer{
		Issuer: is.URL, KeySet: &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{&is.key.PublicKey}}, Audience: audience,
	})
	if err != nil {
		t.Fatalf("fhirtest: verifier: %v", err)
	}
	return v
}
