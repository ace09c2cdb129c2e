package cdshooks

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// TrustedClient is a CDS client (an EHR) allowed to call the services: it
// signs a JWT per request with a key of its JWKS.
type TrustedClient struct {
	// Issuer is the client's iss claim.
	Issuer string
	// JWKSURL is fetched and cached (refreshed on an unknown kid); ignored
	// when JWKSFile or KeySet is set.
	JWKSURL string
	// JWKSFile is a JWK Set on disk, for clients that publish none.
	JWKSFile string
	// KeySet verifies signatures directly (tests, embedding).
	KeySet oidc.KeySet
}

// Client JWT rules (CDS Hooks 1.0/2.0 "Trusting CDS Clients").
const (
	maxTokenLife = 5 * time.Minute // exp no further than this after now
	clockSkew    = time.Minute
)

// clientAlgs are the accepted signature algorithms: the spec's ES384 and
// RS384, and the common 256-bit ones.
var clientAlgs = []jose.SignatureAlgorithm{jose.ES384, jose.RS384, jose.ES256, jose.RS256, jose.PS256, jose.PS384}

// ReplayStore remembers the jti of each client JWT until it expires
// (storage.KV satisfies it, so that replicas sharing a store share it).
type ReplayStore interface {
	PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
}

// clientVerifier checks the Authorization of a service call.
type clientVerifier struct {
	keys   map[string]oidc.KeySet // issuer -> keys
	replay ReplayStore
	now    func() time.Time
}

func newClientVerifier(ctx context.Context, clients []TrustedClient, replay ReplayStore, now func() time.Time) (*clientVerifier, error) {
	if replay == nil {
		return nil, errors.New("cds hooks: client authentication needs a replay store")
	}
	v := &clientVerifier{keys: map[string]oidc.KeySet{}, replay: replay, now: now}
	for _, c := range clients {
		if c.Issuer == "" {
			return nil, errors.New("cds hooks: a trusted CDS client needs an issuer")
		}
		if _, dup := v.keys[c.Issuer]; dup {
			return nil, fmt.Errorf("cds hooks: CDS client %q listed twice", c.Issuer)
		}
		ks := c.KeySet
		switch {
		case ks != nil:
		case c.JWKSFile != "":
			var err error
			if ks, err = loadJWKS(c.JWKSFile); err != nil {
				return nil, fmt.Errorf("cds hooks: CDS client %q: %w", c.Issuer, err)
			}
		case c.JWKSURL != "":
			ks = oidc.NewRemoteKeySet(ctx, c.JWKSURL)
		default:
			return nil, fmt.Errorf("cds hooks: CDS client %q needs a JWKS URL or file", c.Issuer)
		}
		v.keys[c.Issuer] = ks
	}
	return v, nil
}

// loadJWKS reads a JWK Set file of public keys.
func loadJWKS(path string) (oidc.KeySet, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading JWKS: %w", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("JWKS %s: %w", path, err)
	}
	var keys []crypto.PublicKey
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return nil, fmt.Errorf("JWKS %s: key %q is a private key: publish public keys only", path, k.KeyID)
		}
		keys = append(keys, k.Key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("JWKS %s holds no key", path)
	}
	return &oidc.StaticKeySet{PublicKeys: keys}, nil
}

type clientClaims struct {
	Iss string          `json:"iss"`
	Sub string          `json:"sub"`
	Aud json.RawMessage `json:"aud"`
	Exp *json.Number    `json:"exp"`
	Iat *json.Number    `json:"iat"`
	Jti string          `json:"jti"`
}

// verify checks the bearer JWT of a call to audience (the service URL;
// the discovery base is accepted too) and returns the client's issuer.
func (v *clientVerifier) verify(ctx context.Context, raw string, audiences []string) (string, error) {
	jws, err := jose.ParseSigned(raw, clientAlgs)
	if err != nil {
		return "", fmt.Errorf("not a JWT signed with %v: %w", clientAlgs, err)
	}
	if len(jws.Signatures) != 1 {
		return "", errors.New("the JWT must carry exactly one signature")
	}
	var unverified clientClaims
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &unverified); err != nil {
		return "", fmt.Errorf("JWT claims: %w", err)
	}
	ks, ok := v.keys[unverified.Iss]
	if !ok {
		return "", fmt.Errorf("issuer %q is not a trusted CDS client", unverified.Iss)
	}
	payload, err := ks.VerifySignature(ctx, raw)
	if err != nil {
		return "", fmt.Errorf("signature of %q: %w", unverified.Iss, err)
	}
	var c clientClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", fmt.Errorf("JWT claims: %w", err)
	}
	if c.Iss != unverified.Iss {
		return "", errors.New("JWT claims changed under the signature")
	}
	if !audienceMatches(c.Aud, audiences) {
		return "", fmt.Errorf("aud %s is not this service (%s)", c.Aud, strings.Join(audiences, " or "))
	}
	now := v.now()
	exp, err := unix(c.Exp)
	if err != nil {
		return "", fmt.Errorf("exp: %w", err)
	}
	iat, err := unix(c.Iat)
	if err != nil {
		return "", fmt.Errorf("iat: %w", err)
	}
	switch {
	case !now.Before(exp.Add(clockSkew)):
		return "", fmt.Errorf("the JWT expired at %s", exp.UTC().Format(time.RFC3339))
	case exp.After(now.Add(maxTokenLife + clockSkew)):
		return "", fmt.Errorf("exp %s is more than %s away: CDS client JWTs are short-lived", exp.UTC().Format(time.RFC3339), maxTokenLife)
	case iat.After(now.Add(clockSkew)):
		return "", errors.New("iat is in the future")
	case c.Jti == "":
		return "", errors.New("jti is required")
	}
	fresh, err := v.replay.PutIfAbsent(ctx, "cds-hooks/jti/"+c.Iss+"/"+c.Jti, []byte{1}, exp.Add(clockSkew).Sub(now))
	if err != nil {
		return "", fmt.Errorf("recording jti: %w", err)
	}
	if !fresh {
		return "", fmt.Errorf("jti %q was already used: a replayed JWT", c.Jti)
	}
	return c.Iss, nil
}

func audienceMatches(raw json.RawMessage, audiences []string) bool {
	var list []string
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		list = []string{one}
	} else if err := json.Unmarshal(raw, &list); err != nil {
		return false
	}
	for _, a := range list {
		for _, want := range audiences {
			if strings.TrimRight(a, "/") == strings.TrimRight(want, "/") {
				return true
			}
		}
	}
	return false
}

func unix(n *json.Number) (time.Time, error) {
	if n == nil {
		return time.Time{}, errors.New("required")
	}
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, fmt.Errorf("not a number: %w", err)
	}
	return time.Unix(int64(f), 0), nil
}
