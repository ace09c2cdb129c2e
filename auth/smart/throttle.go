package smart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// errHashBusy is returned when too many password hashes are already
// queued: answering quickly is cheaper than letting requests pile up, each
// holding a 19 MiB argon2 buffer once it runs.
var errHashBusy = errors.New("smart: too many password checks in progress")

// hashGate bounds how many argon2 hashes run at once (slots) and how many
// requests may wait for a slot (queue). Waiters honour context cancellation.
type hashGate struct {
	slots chan struct{}
	queue chan struct{}
}

func newHashGate(slots, queue int) *hashGate {
	if slots < 1 {
		slots = 1
	}
	if queue < 0 {
		queue = 0
	}
	return &hashGate{slots: make(chan struct{}, slots), queue: make(chan struct{}, slots+queue)}
}

// do runs fn once a slot is free. It fails with errHashBusy without waiting
// when the queue is full, and with the context's error if ctx ends first.
func (g *hashGate) do(ctx context.Context, fn func()) error {
	select {
	case g.queue <- struct{}{}:
	default:
		return errHashBusy
	}
	defer func() { <-g.queue }()
	select {
	case g.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("wait for password check: %w", ctx.Err())
	}
	defer func() { <-g.slots }()
	fn()
	return nil
}

// ErrTemporarilyUnavailable (RFC 6749 section 4.1.2.1) answers a client
// whose secret could not be checked because the hash queue is full: the
// credentials were not judged, so invalid_client would be wrong.
var ErrTemporarilyUnavailable = &OAuthError{Code: "temporarily_unavailable", Status: http.StatusServiceUnavailable}

// The Retry-After of the two refusals: a source's budget refills over a
// minute; a busy hash gate frees a slot within about one hash (~0.1 s), so
// one second is the smallest honest answer.
const (
	sourceRetrySeconds = 60
	busyRetrySeconds   = 1
)

// checkPassword is CheckPassword behind the source's budget and the
// server's hash gate.
func (s *Server) checkPassword(ctx context.Context, source, encoded, password string) (ok bool, err error) {
	allowed, err := s.sources.allow(ctx, source, s.now())
	if err != nil {
		return false, err
	}
	if !allowed {
		return false, errTooManyAttempts
	}
	if gerr := s.hashes.do(ctx, func() { ok, err = CheckPassword(encoded, password) }); gerr != nil {
		return false, gerr
	}
	return ok, err
}

// errTooManyAttempts is returned when one source address has spent its
// budget of password checks: a password spray across many user names from
// one address is slowed even though no single account reaches a lock.
var errTooManyAttempts = errors.New("smart: too many password checks from this address")

// pfxThrottle keys the password-check budget of a source address (hashed:
// the key has a fixed length whatever the address). It lives in the store
// like the lock-outs, so every process behind one database spends from
// the same budget, and a record expires once its bucket has refilled: the
// store holds only the sources seen within the last minute.
const pfxThrottle = "auth/throttle/"

// sourceLimits is a token bucket per source address for password checks,
// kept in the KV: perMinute checks of burst, refilled at perMinute a
// minute. Each check is one compare-and-swap of the source's record.
type sourceLimits struct {
	kv    kv
	every float64 // tokens a second
	burst float64
}

// bucket is the stored state of one source: tokens left at At (Unix
// nanoseconds).
type bucket struct {
	Tokens float64 `json:"tokens"`
	At     int64   `json:"at"`
}

func newSourceLimits(store kv, perMinute int) *sourceLimits {
	if perMinute <= 0 {
		perMinute = 30
	}
	return &sourceLimits{kv: store, every: float64(perMinute) / 60, burst: float64(perMinute)}
}

// allow spends one check of source's budget; false when it is spent.
func (l *sourceLimits) allow(ctx context.Context, source string, now time.Time) (bool, error) {
	key := hashKey(pfxThrottle, source)
	for {
		old, err := l.kv.Get(ctx, key)
		if err != nil && !notFound(err) {
			return false, fmt.Errorf("read password-check budget: %w", err)
		}
		b := bucket{Tokens: l.burst, At: now.UnixNano()}
		if old != nil {
			if err := json.Unmarshal(old, &b); err != nil {
				return false, fmt.Errorf("decode password-check budget: %w", err)
			}
			if elapsed := now.Sub(time.Unix(0, b.At)).Seconds(); elapsed > 0 {
				b.Tokens = min(l.burst, b.Tokens+elapsed*l.every)
				b.At = now.UnixNano()
			}
		}
		if b.Tokens < 1 {
			return false, nil
		}
		b.Tokens--
		raw, err := json.Marshal(b)
		if err != nil {
			return false, fmt.Errorf("encode password-check budget: %w", err)
		}
		// The record lapses when the bucket is full again.
		ttl := time.Duration((l.burst-b.Tokens)/l.every*float64(time.Second)) + time.Second
		var stored bool
		if old == nil {
			stored, err = l.kv.PutIfAbsent(ctx, key, raw, ttl)
		} else {
			stored, err = l.kv.CompareAndSwap(ctx, key, old, raw, ttl)
		}
		if err != nil {
			return false, fmt.Errorf("spend password-check budget: %w", err)
		}
		if stored {
			return true, nil
		}
		// Another check of the same source spent first: spend on top.
	}
}

// sourceOf is the host part of a TCP peer address.
func sourceOf(remoteAddr string) string {
	if h, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return h
	}
	return remoteAddr
}
