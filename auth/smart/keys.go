package smart

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// keyOverlap is how long a retired signing key stays published after a
// rotation: longer than any token it signed can live.
const keyOverlap = 2 * time.Hour

// keyRing holds the server's signing keys, loaded from the KV.
type keyRing struct {
	kv kv

	mu     sync.RWMutex
	active *jose.JSONWebKey
	byKid  map[string]*jose.JSONWebKey
}

func newKeyRing(ctx context.Context, store kv) (*keyRing, error) {
	r := &keyRing{kv: store}
	if err := r.load(ctx); err != nil && !notFound(err) {
		return nil, err
	}
	if r.active != nil {
		return r, nil
	}
	// First start: generate a key. PutIfAbsent on the active pointer makes
	// two instances starting together agree on one key.
	k, err := generateKey()
	if err != nil {
		return nil, err
	}
	if err := r.kv.putJSON(ctx, pfxKey+k.KeyID, k, 0); err != nil {
		return nil, err
	}
	won, err := r.kv.PutIfAbsent(ctx, keyActive, []byte(k.KeyID), 0)
	if err != nil {
		return nil, fmt.Errorf("store active key id: %w", err)
	}
	if !won {
		_ = r.kv.Delete(ctx, pfxKey+k.KeyID)
	}
	if err := r.load(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

func generateKey() (*jose.JSONWebKey, error) {
	pk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	return &jose.JSONWebKey{Key: pk, KeyID: randomToken(12), Algorithm: string(jose.RS256), Use: "sig"}, nil
}

// load reads every published key and the active pointer from the KV.
func (r *keyRing) load(ctx context.Context) error {
	activeID, err := r.kv.Get(ctx, keyActive)
	if err != nil {
		return fmt.Errorf("load active key id: %w", err)
	}
	keys, err := r.kv.List(ctx, pfxKey)
	if err != nil {
		return fmt.Errorf("list signing keys: %w", err)
	}
	byKid := map[string]*jose.JSONWebKey{}
	for _, key := range keys {
		var k jose.JSONWebKey
		if err := r.kv.getJSON(ctx, key, &k); err != nil {
			if notFound(err) {
				continue
			}
			return err
		}
		byKid[k.KeyID] = &k
	}
	active := byKid[string(activeID)]
	if active == nil {
		return fmt.Errorf("active signing key %q is missing", activeID)
	}
	r.mu.Lock()
	r.active, r.byKid = active, byKid
	r.mu.Unlock()
	return nil
}

// Rotate makes a new key active; the previous one stays published for
// keyOverlap so that tokens it signed still verify.
func (r *keyRing) rotate(ctx context.Context) (string, error) {
	r.mu.RLock()
	old := r.active
	r.mu.RUnlock()
	k, err := generateKey()
	if err != nil {
		return "", err
	}
	if err := r.kv.putJSON(ctx, pfxKey+k.KeyID, k, 0); err != nil {
		return "", err
	}
	if err := r.kv.Put(ctx, keyActive, []byte(k.KeyID), 0); err != nil {
		return "", fmt.Errorf("store active key id: %w", err)
	}
	if old != nil {
		if err := r.kv.putJSON(ctx, pfxKey+old.KeyID, old, keyOverlap); err != nil {
			return "", err
		}
	}
	return k.KeyID, r.load(ctx)
}

func (r *keyRing) signer() (jose.Signer, error) {
	r.mu.RLock()
	k := r.active
	r.mu.RUnlock()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	return s, nil
}

// sign signs claims as a compact JWS with the active key (kid in the header).
func (r *keyRing) sign(claims any) (string, error) {
	s, err := r.signer()
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return jws.CompactSerialize()
}

// publicJWKS is the JWKS document of the published keys.
func (r *keyRing) publicJWKS() jose.JSONWebKeySet {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var set jose.JSONWebKeySet
	for _, k := range r.byKid {
		set.Keys = append(set.Keys, k.Public())
	}
	return set
}

// VerifySignature verifies a JWS signed by one of our keys; it makes the
// ring an oidc.KeySet for the resource server.
func (r *keyRing) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, fmt.Errorf("parse token: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("token must have exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	r.mu.RLock()
	k := r.byKid[kid]
	r.mu.RUnlock()
	if k == nil {
		// Another instance may have rotated since we loaded.
		if err := r.load(ctx); err != nil {
			return nil, err
		}
		r.mu.RLock()
		k = r.byKid[kid]
		r.mu.RUnlock()
		if k == nil {
			return nil, fmt.Errorf("unknown key id %q", kid)
		}
	}
	pub := k.Public()
	return jws.Verify(&pub)
}

func parseJWKS(b []byte) (*jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("parse JWKS: %w", err)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return nil, fmt.Errorf("JWKS key %q is not a public key", k.KeyID)
		}
	}
	return &set, nil
}

// jwksCache fetches client JWKS URLs and keeps them as long as their
// Cache-Control allows (SMART backend services: respect cache headers).
type jwksCache struct {
	client *http.Client
	mu     sync.Mutex
	sets   map[string]cachedSet
}

type cachedSet struct {
	set     *jose.JSONWebKeySet
	expires time.Time
}

const (
	jwksDefaultTTL = 5 * time.Minute
	jwksMaxBytes   = 1 << 20
)

func (c *jwksCache) get(ctx context.Context, u string, refresh bool) (*jose.JSONWebKeySet, error) {
	c.mu.Lock()
	cs, ok := c.sets[u]
	c.mu.Unlock()
	if ok && !refresh && time.Now().Before(cs.expires) {
		return cs.set, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch jwks %s: status %d", u, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, jwksMaxBytes))
	if err != nil {
		return nil, fmt.Errorf("read jwks %s: %w", u, err)
	}
	set, err := parseJWKS(body)
	if err != nil {
		return nil, err
	}
	ttl := cacheTTL(resp.Header.Get("Cache-Control"))
	if ttl > 0 {
		c.mu.Lock()
		c.sets[u] = cachedSet{set: set, expires: time.Now().Add(ttl)}
		c.mu.Unlock()
	}
	return set, nil
}

// cacheTTL reads max-age; no-store/no-cache mean "do not keep".
func cacheTTL(h string) time.Duration {
	if h == "" {
		return jwksDefaultTTL
	}
	for _, d := range strings.Split(h, ",") {
		d = strings.TrimSpace(strings.ToLower(d))
		switch {
		case d == "no-store" || d == "no-cache":
			return 0
		case strings.HasPrefix(d, "max-age="):
			n, err := strconv.Atoi(d[len("max-age="):])
			if err != nil || n < 0 {
				return 0
			}
			return time.Duration(n) * time.Second
		}
	}
	return jwksDefaultTTL
}
