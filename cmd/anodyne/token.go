package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// generateClientKey creates an ES384 key pair for a backend-services
// client, writes the private JWK to path (mode 0600, never over an
// existing file: a key in use is not silently replaced) and returns the
// public JWKS to register. The kid is the key's RFC 7638 thumbprint.
func generateClientKey(path string) ([]byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating an ES384 key: %w", err)
	}
	pub := jose.JSONWebKey{Key: k.Public(), Algorithm: string(jose.ES384), Use: "sig"}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("key thumbprint: %w", err)
	}
	pub.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	priv := jose.JSONWebKey{Key: k, KeyID: pub.KeyID, Algorithm: pub.Algorithm, Use: "sig"}
	privJSON, err := json.MarshalIndent(priv, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the private key: %w", err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	if err != nil {
		return nil, fmt.Errorf("encoding the public key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("writing the private key (an existing file is never overwritten): %w", err)
	}
	if _, err := f.Write(append(privJSON, '\n')); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("writing the private key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("writing the private key %s: %w", path, err)
	}
	return jwks, nil
}

// signingKey reads a private key file: a JWK (as written by clients add
// --generate-key) or PEM (PKCS#8, SEC 1 EC or PKCS#1 RSA). It returns the
// key with its algorithm (ES384 for P-384 EC, RS384 for RSA, the two
// SMART Backend Services allows) and kid.
func signingKey(path string) (jose.JSONWebKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("reading --key: %w", err)
	}
	var jwk jose.JSONWebKey
	if b := strings.TrimSpace(string(raw)); strings.HasPrefix(b, "{") {
		var set jose.JSONWebKeySet
		if json.Unmarshal([]byte(b), &set) == nil && len(set.Keys) > 0 {
			if len(set.Keys) != 1 {
				return jose.JSONWebKey{}, fmt.Errorf("--key %s is a set of %d keys; it must hold one private key", path, len(set.Keys))
			}
			jwk = set.Keys[0]
		} else if err := jwk.UnmarshalJSON([]byte(b)); err != nil {
			return jose.JSONWebKey{}, fmt.Errorf("--key %s is not a valid JWK: %w", path, err)
		}
	} else {
		blk, _ := pem.Decode(raw)
		if blk == nil {
			return jose.JSONWebKey{}, fmt.Errorf("--key %s is neither a JWK nor PEM", path)
		}
		var k any
		if k, err = x509.ParsePKCS8PrivateKey(blk.Bytes); err != nil {
			if k, err = x509.ParseECPrivateKey(blk.Bytes); err != nil {
				if k, err = x509.ParsePKCS1PrivateKey(blk.Bytes); err != nil {
					return jose.JSONWebKey{}, fmt.Errorf("--key %s: no private key in the PEM block %q", path, blk.Type)
				}
			}
		}
		jwk = jose.JSONWebKey{Key: k}
	}
	if jwk.IsPublic() {
		return jose.JSONWebKey{}, fmt.Errorf("--key %s holds a public key; the private key is needed", path)
	}
	alg := ""
	switch k := jwk.Key.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve == elliptic.P384() {
			alg = string(jose.ES384)
		}
	case *rsa.PrivateKey:
		alg = string(jose.RS384)
	}
	if alg == "" || (jwk.Algorithm != "" && jwk.Algorithm != alg) {
		return jose.JSONWebKey{}, fmt.Errorf("--key %s: SMART Backend Services signs with ES384 (EC P-384) or RS384 (RSA) only", path)
	}
	jwk.Algorithm = alg
	if jwk.KeyID == "" {
		pub := jwk.Public()
		tp, err := pub.Thumbprint(crypto.SHA256)
		if err != nil {
			return jose.JSONWebKey{}, fmt.Errorf("key thumbprint: %w", err)
		}
		jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	}
	return jwk, nil
}

// tokenConfig is the configuration of "anodyne token".
type tokenConfig struct {
	client, key, scope, server string
	json                       bool
	lifetime                   time.Duration
}

// tokenCommand is "anodyne token --client ID --key FILE --scope S": SMART
// Backend Services against a running server (discovery, a private_key_jwt
// assertion, client_credentials) printing the access token alone on
// stdout, for TOKEN=$(anodyne token ...) and curl.
func tokenCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var cfg tokenConfig
	fs := flag.NewFlagSet("anodyne token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.client, "client", "", "client_id of a confidential-asymmetric client (required)")
	fs.StringVar(&cfg.key, "key", "", "its private key: the JWK file written by clients add --generate-key, or PEM (required)")
	fs.StringVar(&cfg.scope, "scope", "", "scopes to ask for, e.g. \"system/*.rs\" (required)")
	fs.StringVar(&cfg.server, "server", "http://127.0.0.1:8080/fhir", "FHIR base URL of the running server; its token endpoint is found by SMART discovery")
	fs.BoolVar(&cfg.json, "json", false, "print the whole token response (JSON) instead of the access token alone")
	fs.DurationVar(&cfg.lifetime, "assertion-lifetime", 4*time.Minute, "lifetime of the signed assertion (at most 5 minutes)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: anodyne token --client ID --key FILE --scope SCOPES [--server URL]\n\nGets an access token by SMART Backend Services (client_credentials with a\nprivate_key_jwt assertion) and prints it, e.g.\n\n  curl -H \"Authorization: Bearer $(anodyne token --client etl --key etl.jwk --scope system/*.rs)\" ...\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseStoreCommand(fs, args, getenv); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		fs.Usage()
		return usagef("token: unexpected arguments %v", fs.Args())
	case cfg.client == "" || cfg.key == "" || cfg.scope == "":
		fs.Usage()
		return usagef("token: --client, --key and --scope are required")
	case cfg.lifetime <= 0 || cfg.lifetime > 5*time.Minute:
		fs.Usage()
		return usagef("token: --assertion-lifetime must be more than 0 and at most 5m")
	}
	key, err := signingKey(cfg.key)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	endpoint, err := discoverTokenEndpoint(ctx, hc, cfg.server)
	if err != nil {
		return err
	}
	assertion, err := signAssertion(key, cfg.client, endpoint, cfg.lifetime)
	if err != nil {
		return err
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"scope":                 {cfg.scope},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	res, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("token request to %s: %w", endpoint, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("token request to %s: reading the answer: %w", endpoint, err)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.Unmarshal(body, &tr)
	if res.StatusCode != http.StatusOK || tr.AccessToken == "" {
		if tr.Error != "" {
			return fmt.Errorf("the token endpoint %s refused (%d %s): %s", endpoint, res.StatusCode, tr.Error, tr.Description)
		}
		return fmt.Errorf("the token endpoint %s answered %d: %s", endpoint, res.StatusCode, diagnostics(body))
	}
	if cfg.json {
		_, err = fmt.Fprintln(stdout, strings.TrimSpace(string(body)))
		return err
	}
	_, err = fmt.Fprintln(stdout, tr.AccessToken)
	return err
}

// discoverTokenEndpoint reads token_endpoint from the server's SMART
// configuration ({base}/.well-known/smart-configuration).
func discoverTokenEndpoint(ctx context.Context, hc *http.Client, base string) (string, error) {
	u := strings.TrimRight(base, "/") + "/.well-known/smart-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("SMART discovery: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	res, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("SMART discovery at %s (is the server running? --server is its FHIR base): %w", u, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("SMART discovery at %s answered %d (is --server the FHIR base, with --auth=on?)", u, res.StatusCode)
	}
	var conf struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&conf); err != nil {
		return "", fmt.Errorf("SMART discovery at %s: %w", u, err)
	}
	if conf.TokenEndpoint == "" {
		return "", errors.New("SMART discovery at " + u + " names no token_endpoint")
	}
	return conf.TokenEndpoint, nil
}

// signAssertion builds the client authentication JWT of SMART Backend
// Services: iss = sub = client_id, aud = the token endpoint, a short exp
// and a fresh jti.
func signAssertion(key jose.JSONWebKey, clientID, aud string, lifetime time.Duration) (string, error) {
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Algorithm), Key: key.Key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", key.KeyID))
	if err != nil {
		return "", fmt.Errorf("signing the assertion: %w", err)
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("assertion jti: %w", err)
	}
	now := time.Now()
	claims, err := json.Marshal(map[string]any{
		"iss": clientID, "sub": clientID, "aud": aud,
		"iat": now.Unix(), "exp": now.Add(lifetime).Unix(),
		"jti": base64.RawURLEncoding.EncodeToString(jti),
	})
	if err != nil {
		return "", fmt.Errorf("assertion claims: %w", err)
	}
	jws, err := sg.Sign(claims)
	if err != nil {
		return "", fmt.Errorf("signing the assertion: %w", err)
	}
	return jws.CompactSerialize()
}
