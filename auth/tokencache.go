package auth

import (
	"crypto/sha256"
	"sync"
	"time"
)

// Bounds of a Verifier's token cache.
const (
	// maxCachedTokens bounds the memory of the cache; only tokens that
	// passed full verification are ever stored, so it fills with live
	// tokens, not with an attacker's junk.
	maxCachedTokens = 4096
	// maxCacheAge caps how long a verification result is reused even for a
	// long-lived token, so a signing key withdrawn from the issuer's key set
	// stops being honoured within this delay rather than at token expiry.
	maxCacheAge = time.Minute
)

// tokenCache remembers the outcome of signature, issuer, audience and
// claim verification of access tokens, so the public-key operation and the
// claim mapping run once per token instead of once per request. It is keyed
// by the SHA-256 of the whole compact token: a token altered in any byte
// (header, payload or signature) misses and is verified from scratch. It
// does not cache liveness: expiry is bounded by the entry's lifetime and
// the revocation check runs on every request.
type tokenCache struct {
	mu      sync.Mutex
	max     int
	maxAge  time.Duration
	entries map[[sha256.Size]byte]cachedToken
}

type cachedToken struct {
	// p is shared by every hit and never modified; callers get a copy.
	p *Principal
	// until is min(token exp, time of verification + maxAge): the entry is
	// never served at or after the token's expiry.
	until time.Time
}

func newTokenCache(max int, maxAge time.Duration) *tokenCache {
	return &tokenCache{max: max, maxAge: maxAge, entries: make(map[[sha256.Size]byte]cachedToken)}
}

func tokenKey(raw string) [sha256.Size]byte { return sha256.Sum256([]byte(raw)) }

// get returns the verified Principal of the token, or nil when the token
// was not verified recently or its entry has lapsed (which then is dropped).
func (c *tokenCache) get(key [sha256.Size]byte, now time.Time) *Principal {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return nil
	}
	if !now.Before(e.until) {
		delete(c.entries, key)
		return nil
	}
	return e.p
}

// put stores a freshly verified Principal until the token expires or
// maxAge has passed, whichever comes first.
func (c *tokenCache) put(key [sha256.Size]byte, p *Principal, now time.Time) {
	until := now.Add(c.maxAge)
	if p.ExpiresAt.Before(until) {
		until = p.ExpiresAt
	}
	if !now.Before(until) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.max {
		c.evict(now)
	}
	c.entries[key] = cachedToken{p: p, until: until}
}

// evict makes room: lapsed entries first, then, if the cache is full of
// live tokens, an arbitrary eighth of it (map order), which costs those
// tokens one more verification each rather than a sweep on every insert.
func (c *tokenCache) evict(now time.Time) {
	for k, e := range c.entries {
		if !now.Before(e.until) {
			delete(c.entries, k)
		}
	}
	if len(c.entries) < c.max {
		return
	}
	drop := max(c.max/8, 1)
	for k := range c.entries {
		if drop == 0 {
			break
		}
		delete(c.entries, k)
		drop--
	}
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
