package smart

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
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

// checkPassword is CheckPassword behind the server's hash gate.
func (s *Server) checkPassword(ctx context.Context, source, encoded, password string) (ok bool, err error) {
	if !s.sources.allow(source, s.now()) {
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

// sourceLimits is a token bucket per source address for password checks.
// The table is bounded: when it is full, buckets that have refilled (idle
// sources) are dropped, and if it is still full a new source is refused
// rather than let an attacker with many addresses grow memory without end.
type sourceLimits struct {
	mu      sync.Mutex
	every   rate.Limit
	burst   int
	max     int
	buckets map[string]*rate.Limiter
}

func newSourceLimits(perMinute, maxSources int) *sourceLimits {
	if perMinute <= 0 {
		perMinute = 30
	}
	if maxSources <= 0 {
		maxSources = 100_000
	}
	return &sourceLimits{every: rate.Limit(float64(perMinute) / 60), burst: perMinute, max: maxSources, buckets: map[string]*rate.Limiter{}}
}

// allow spends one check of source's budget.
func (l *sourceLimits) allow(source string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[source]
	if b == nil {
		if len(l.buckets) >= l.max {
			for k, v := range l.buckets {
				if v.TokensAt(now) >= float64(l.burst) {
					delete(l.buckets, k)
				}
			}
		}
		if len(l.buckets) >= l.max {
			return false
		}
		b = rate.NewLimiter(l.every, l.burst)
		l.buckets[source] = b
	}
	return b.AllowN(now, 1)
}

// sourceOf is the host part of a TCP peer address.
func sourceOf(remoteAddr string) string {
	if h, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return h
	}
	return remoteAddr
}
