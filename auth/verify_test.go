package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

const (
	testIss = "https://as.example"
	testAud = "https://fhir.example/fhir"
)

// countingKeySet counts the signature verifications that reach the real
// key set, which is what the cache exists to avoid.
type countingKeySet struct {
	ks    oidc.KeySet
	calls atomic.Int64
}

func (c *countingKeySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	c.calls.Add(1)
	return c.ks.VerifySignature(ctx, jwt)
}

// verifierFixture is a Verifier over one ES256 issuer with a movable clock
// and a switchable revocation list.
type verifierFixture struct {
	v       *Verifier
	keys    *countingKeySet
	signer  jose.Signer
	mu      sync.Mutex
	now     time.Time
	revoked map[string]bool
}

func newVerifierFixture(t *testing.T) *verifierFixture {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &verifierFixture{
		keys:    &countingKeySet{ks: &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{key.Public()}}},
		signer:  signer,
		now:     time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC),
		revoked: map[string]bool{},
	}
	f.v, err = NewVerifier(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), TrustedIssuer{
		Issuer: testIss, Audience: testAud, KeySet: f.keys,
		Active: func(_ context.Context, raw string) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.revoked[raw] {
				return errors.New("token revoked")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.v.now = f.clock
	return f
}

func (f *verifierFixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *verifierFixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func (f *verifierFixture) revoke(raw string) {
	f.mu.Lock()
	f.revoked[raw] = true
	f.mu.Unlock()
}

func (f *verifierFixture) token(t *testing.T, ttl time.Duration, claims map[string]any) string {
	t.Helper()
	c := map[string]any{"iss": testIss, "aud": testAud, "sub": "u1", "exp": f.clock().Add(ttl).Unix(), "iat": f.clock().Unix(), "scope": "launch/patient patient/Observation.rs", "patient": "p1"}
	for k, v := range claims {
		c[k] = v
	}
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := f.signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// tamper changes one segment of a signed token (0 header, 1 payload,
// 2 signature) so that it still parses: header and payload get a field
// rewritten (a forged patient, an added kid), the signature one character.
func tamper(t *testing.T, raw string, segment int) string {
	t.Helper()
	parts := strings.Split(raw, ".")
	if segment == 2 {
		s := []byte(parts[2])
		i := len(s) / 2
		if s[i] == 'A' {
			s[i] = 'B'
		} else {
			s[i] = 'A'
		}
		parts[2] = string(s)
		return strings.Join(parts, ".")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[segment])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if segment == 0 {
		m["kid"] = "forged"
	} else {
		m["patient"] = "p2"
	}
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	parts[segment] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

// TestVerifierCache checks that the cache saves signature checks and
// nothing else: every step is one Verify call with the expected outcome and
// the number of signature verifications it must have cost.
func TestVerifierCache(t *testing.T) {
	type step struct {
		name    string
		before  func(f *verifierFixture, tok string) // e.g. move the clock, revoke
		token   func(f *verifierFixture, tok string) string
		ok      bool
		sigCost int64 // signature verifications this step performs
	}
	same := func(_ *verifierFixture, tok string) string { return tok }
	tampered := func(segment int) func(*verifierFixture, string) string {
		return func(_ *verifierFixture, tok string) string { return tamper(t, tok, segment) }
	}
	cases := []struct {
		name  string
		ttl   time.Duration
		steps []step
	}{
		{"second use is served from the cache", time.Hour, []step{
			{name: "first", token: same, ok: true, sigCost: 1},
			{name: "second", token: same, ok: true, sigCost: 0},
			{name: "third", token: same, ok: true, sigCost: 0},
		}},
		{"revocation is immediate on a cached token", time.Hour, []step{
			{name: "first", token: same, ok: true, sigCost: 1},
			{name: "after revoke", before: func(f *verifierFixture, tok string) { f.revoke(tok) }, token: same, ok: false, sigCost: 0},
		}},
		{"revoked before first use", time.Hour, []step{
			{name: "first", before: func(f *verifierFixture, tok string) { f.revoke(tok) }, token: same, ok: false, sigCost: 1},
			{name: "retry verifies again (a refused token is not cached)", token: same, ok: false, sigCost: 1},
		}},
		{"expiry is enforced on a cached token", 30 * time.Second, []step{
			{name: "first", token: same, ok: true, sigCost: 1},
			{name: "just before exp", before: func(f *verifierFixture, _ string) { f.advance(29 * time.Second) }, token: same, ok: true, sigCost: 0},
			{name: "after exp", before: func(f *verifierFixture, _ string) { f.advance(2 * time.Second) }, token: same, ok: false, sigCost: 1},
		}},
		{"long-lived token is re-verified after maxCacheAge", time.Hour, []step{
			{name: "first", token: same, ok: true, sigCost: 1},
			{name: "after max age", before: func(f *verifierFixture, _ string) { f.advance(maxCacheAge + time.Second) }, token: same, ok: true, sigCost: 1},
			{name: "cached again", token: same, ok: true, sigCost: 0},
		}},
		{"tampered signature misses the cache and is refused", time.Hour, []step{
			{name: "first", token: same, ok: true, sigCost: 1},
			{name: "tampered", token: tampered(2), ok: false, sigCost: 1},
		}},
		{"tampered payload misses the cache and is refused", time.Hour, []step{
			{name: "first", token: same, ok: true, sigCost: 1},
			{name: "tampered", token: tampered(1), ok: false, sigCost: 1},
		}},
		{"tampered header misses the cache and is refused", time.Hour, []step{
			{name: "first", token: same, ok: true, sigCost: 1},
			{name: "tampered", token: tampered(0), ok: false, sigCost: 1},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newVerifierFixture(t)
			tok := f.token(t, tc.ttl, nil)
			for _, s := range tc.steps {
				if s.before != nil {
					s.before(f, tok)
				}
				before := f.keys.calls.Load()
				p, err := f.v.Verify(context.Background(), s.token(f, tok))
				if s.ok && err != nil {
					t.Fatalf("%s: refused: %v", s.name, err)
				}
				if !s.ok {
					if err == nil {
						t.Fatalf("%s: accepted", s.name)
					}
					if !errors.Is(err, ErrInvalidToken) {
						t.Fatalf("%s: error %v is not ErrInvalidToken", s.name, err)
					}
				}
				if s.ok && (p.Patient != "p1" || p.Subject != "u1" || len(p.Scopes.Resource) != 1) {
					t.Fatalf("%s: principal %+v", s.name, p)
				}
				if got := f.keys.calls.Load() - before; got != s.sigCost {
					t.Fatalf("%s: %d signature verifications, want %d", s.name, got, s.sigCost)
				}
			}
		})
	}
}

// TestVerifierCacheCopies checks that a caller changing its Principal does
// not change what the next request with the same token gets.
func TestVerifierCacheCopies(t *testing.T) {
	f := newVerifierFixture(t)
	tok := f.token(t, time.Hour, nil)
	p1, err := f.v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	p1.Patient = "someone-else"
	p2, err := f.v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if p2.Patient != "p1" || p2 == p1 {
		t.Fatalf("cached principal was shared: %+v", p2)
	}
}

func TestTokenCacheBounded(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		max     int
		inserts int
		ttl     time.Duration
		advance time.Duration // between inserts
	}{
		{"live entries", 16, 100, time.Hour, 0},
		{"lapsing entries", 16, 100, 2 * time.Second, time.Second},
		{"one slot", 1, 10, time.Hour, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTokenCache(tc.max, time.Minute)
			at := now
			var last [32]byte
			for i := range tc.inserts {
				last = tokenKey(fmt.Sprint(i))
				c.put(last, &Principal{ExpiresAt: at.Add(tc.ttl)}, at)
				if n := c.len(); n > tc.max {
					t.Fatalf("after %d inserts the cache holds %d > %d", i+1, n, tc.max)
				}
				at = at.Add(tc.advance)
			}
			if c.get(last, at) == nil {
				t.Fatal("the newest entry was evicted")
			}
		})
	}
	// An already expired token is never stored.
	c := newTokenCache(4, time.Minute)
	c.put(tokenKey("x"), &Principal{ExpiresAt: now}, now)
	if c.len() != 0 {
		t.Fatal("expired token cached")
	}
}

func TestVerifierConcurrent(t *testing.T) {
	f := newVerifierFixture(t)
	toks := make([]string, 8)
	for i := range toks {
		toks[i] = f.token(t, time.Hour, map[string]any{"jti": fmt.Sprint(i)})
	}
	f.revoke(toks[0])
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				tok := toks[(g+i)%len(toks)]
				_, err := f.v.Verify(context.Background(), tok)
				if (tok == toks[0]) != (err != nil) {
					errs <- fmt.Errorf("token %d: err=%v", (g+i)%len(toks), err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
