package smart

import (
	"context"
	"errors"
	"fmt"
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
