package smart

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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

// checkPassword is CheckPassword behind the server's hash gate.
func (s *Server) checkPassword(ctx context.Context, encoded, password string) (ok bool, err error) {
	if gerr := s.hashes.do(ctx, func() { ok, err = CheckPassword(encoded, password) }); gerr != nil {
		return false, gerr
	}
	return ok, err
}
