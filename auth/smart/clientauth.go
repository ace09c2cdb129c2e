package smart

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionAlgs are the algorithms SMART requires servers to verify.
var assertionAlgs = []jose.SignatureAlgorithm{jose.RS384, jose.ES384}

// authenticateClient identifies the client of a token, introspection or
// revocation request: private_key_jwt, client_secret_basic, or a bare
// client_id for public clients. A confidential client must authenticate.
func (s *Server) authenticateClient(r *http.Request) (*Client, error) {
	ctx := r.Context()
	if at := r.PostFormValue("client_assertion_type"); at != "" || r.PostFormValue("client_assertion") != "" {
		if at != assertionType {
			return nil, ErrInvalidClient.WithDescription("unsupported client_assertion_type")
		}
		c, err := s.verifyAssertion(ctx, r.PostFormValue("client_assertion"))
		if err != nil {
			return nil, err
		}
		// RFC 7521 §4.2: a client_id beside an assertion must name the
		// same client; two identities in one request are refused.
		if id := r.PostFormValue("client_id"); id != "" && id != c.ID {
			return nil, ErrInvalidClient.WithDescription("client_id does not match the client assertion")
		}
		return c, nil
	}
	if id, secret, ok := r.BasicAuth(); ok {
		c, err := s.clients.Get(ctx, id)
		if err != nil {
			if notFound(err) {
				return nil, ErrInvalidClient.WithDescription("unknown client")
			}
			return nil, fmt.Errorf("load client: %w", err)
		}
		if c.Type != ClientSymmetric {
			return nil, ErrInvalidClient.WithDescription("client_secret_basic is not registered for this client")
		}
		ok, err := s.checkPassword(ctx, sourceOf(r.RemoteAddr), c.SecretHash, secret)
		if errors.Is(err, errTooManyAttempts) {
			return nil, ErrTemporarilyUnavailable.WithDescription("too many client authentications from this address; retry in a minute").retryAfter(sourceRetrySeconds)
		}
		if errors.Is(err, errHashBusy) {
			return nil, ErrTemporarilyUnavailable.WithDescription("too many client authentications in progress; retry shortly").retryAfter(busyRetrySeconds)
		}
		if err != nil {
			return nil, fmt.Errorf("client %s secret: %w", id, err)
		}
		if !ok {
			return nil, ErrInvalidClient.WithDescription("bad client credentials")
		}
		return c, nil
	}
	id := r.PostFormValue("client_id")
	if id == "" {
		return nil, ErrInvalidClient.WithDescription("client authentication is required")
	}
	return s.publicClient(ctx, id)
}

// publicClient identifies a client by id alone, which only a public
// client may do: a confidential one must authenticate.
func (s *Server) publicClient(ctx context.Context, id string) (*Client, error) {
	c, err := s.clients.Get(ctx, id)
	if err != nil {
		if notFound(err) {
			return nil, ErrInvalidClient.WithDescription("unknown client")
		}
		return nil, fmt.Errorf("load client: %w", err)
	}
	if c.Type != ClientPublic {
		return nil, ErrInvalidClient.WithDescription("this client must authenticate")
	}
	return c, nil
}

// verifyAssertion checks a private_key_jwt client assertion (SMART
// backend services / client-confidential-asymmetric): registered keys,
// RS384 or ES384, iss = sub = client_id, aud = token URL, exp at most five
// minutes ahead, and a jti never seen before for this client.
func (s *Server) verifyAssertion(ctx context.Context, raw string) (*Client, error) {
	bad := func(msg string) error { return ErrInvalidClient.WithDescription(msg) }
	tok, err := jwt.ParseSigned(raw, assertionAlgs)
	if err != nil {
		return nil, bad("client_assertion is not a JWT signed with RS384 or ES384")
	}
	if len(tok.Headers) != 1 {
		return nil, bad("client_assertion must have one signature")
	}
	hdr := tok.Headers[0]
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, bad("client_assertion claims are unreadable")
	}
	if unverified.Issuer == "" || unverified.Issuer != unverified.Subject {
		return nil, bad("client_assertion iss and sub must both be the client_id")
	}
	c, err := s.clients.Get(ctx, unverified.Issuer)
	if err != nil {
		if notFound(err) {
			return nil, bad("unknown client")
		}
		return nil, fmt.Errorf("load client: %w", err)
	}
	if c.Type != ClientAsymmetric {
		return nil, bad("private_key_jwt is not registered for this client")
	}
	if jku, ok := hdr.ExtraHeaders["jku"].(string); ok && jku != c.JWKSURL {
		return nil, bad("jku does not match the registered JWKS URL")
	}
	key, err := s.assertionKey(ctx, c, hdr.KeyID, hdr.Algorithm)
	if err != nil {
		return nil, err
	}
	var claims jwt.Claims
	if err := tok.Claims(key.Key, &claims); err != nil {
		return nil, bad("client_assertion signature is invalid")
	}
	now := s.now()
	if err := claims.ValidateWithLeeway(jwt.Expected{
		Issuer: c.ID, Subject: c.ID, AnyAudience: jwt.Audience{s.url(pathToken)}, Time: now,
	}, clockSkew); err != nil {
		return nil, bad("client_assertion claims are invalid: " + err.Error())
	}
	if claims.Expiry == nil {
		return nil, bad("client_assertion needs exp")
	}
	exp := claims.Expiry.Time()
	if exp.After(now.Add(maxAssertionTTL + clockSkew)) {
		return nil, bad("client_assertion exp is more than five minutes ahead")
	}
	if claims.ID == "" {
		return nil, bad("client_assertion needs a jti")
	}
	// The jti is remembered until the assertion expires: after that the
	// assertion is refused on exp anyway.
	fresh, err := s.kv.PutIfAbsent(ctx, hashKey(pfxJTI, c.ID+"\x00"+claims.ID), []byte{1}, time.Until(exp)+clockSkew)
	if err != nil {
		return nil, fmt.Errorf("record assertion jti: %w", err)
	}
	if !fresh {
		return nil, bad("client_assertion jti was already used")
	}
	return c, nil
}

// assertionKey finds exactly one registered key matching kid and alg.
// With a JWKS URL, an unknown kid triggers one refetch (the client may have
// rotated its keys).
func (s *Server) assertionKey(ctx context.Context, c *Client, kid, alg string) (*jose.JSONWebKey, error) {
	pick := func(set *jose.JSONWebKeySet) []jose.JSONWebKey {
		var out []jose.JSONWebKey
		for _, k := range set.Keys {
			if kid != "" && k.KeyID != kid {
				continue
			}
			if k.Algorithm != "" && k.Algorithm != alg {
				continue
			}
			if !keyFitsAlg(k, alg) {
				continue
			}
			out = append(out, k)
		}
		return out
	}
	var set *jose.JSONWebKeySet
	var err error
	if len(c.JWKS) > 0 {
		set, err = parseJWKS(c.JWKS)
	} else {
		set, err = s.jwks.get(ctx, c.JWKSURL, false)
	}
	if err != nil {
		s.log.WarnContext(ctx, "client keys unavailable", "client", c.ID, "err", err)
		return nil, ErrInvalidClient.WithDescription("the client's keys could not be loaded")
	}
	keys := pick(set)
	if len(keys) == 0 && len(c.JWKS) == 0 {
		if set, err = s.jwks.get(ctx, c.JWKSURL, true); err == nil {
			keys = pick(set)
		}
	}
	if len(keys) != 1 {
		return nil, ErrInvalidClient.WithDescription(fmt.Sprintf("%d registered keys match kid %q and alg %s; exactly one must", len(keys), kid, alg))
	}
	return &keys[0], nil
}

func keyFitsAlg(k jose.JSONWebKey, alg string) bool {
	switch pk := k.Key.(type) {
	case *rsa.PublicKey:
		return alg == string(jose.RS384)
	case *ecdsa.PublicKey:
		return alg == string(jose.ES384) && pk.Curve == elliptic.P384()
	}
	return false
}
