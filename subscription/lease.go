package subscription

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// lease is the right to deliver one stream for a fixed term, taken with
// KV.PutIfAbsent (atomic on every backend). The store has no
// compare-and-swap on KV values, so a lease is never renewed in place:
// its holder works only while the term has more than margin left (a
// delivery is bounded by the timeout, which margin exceeds), then
// deletes the key while it is certainly still its own and takes a new
// term. A holder that dies stops working and its key expires, and another
// process takes over after at most the term.
//
// What this relies on: clocks of the processes and the store within
// margin of each other, and no pause of a holder longer than margin
// between its check and the work it does (a stop-the-world pause or a
// suspended VM can let two holders deliver at once; receivers still
// de-duplicate by event id).
type lease struct {
	kv     storage.KV
	key    string
	holder []byte
	until  time.Time
	margin time.Duration
}

const leasePrefix = "subscription/lease/"

// acquire tries to take the stream's lease for ttl.
func acquire(ctx context.Context, kv storage.KV, stream, holder string, ttl, margin time.Duration) (*lease, bool, error) {
	l := &lease{kv: kv, key: leasePrefix + stream, holder: []byte(holder), margin: margin}
	until := time.Now().Add(ttl)
	ok, err := kv.PutIfAbsent(ctx, l.key, l.holder, ttl)
	if err != nil {
		return nil, false, fmt.Errorf("taking the lease of %s: %w", stream, err)
	}
	if !ok {
		return nil, false, nil
	}
	l.until = until
	return l, true, nil
}

// live reports whether the holder may start one more delivery.
func (l *lease) live() bool { return time.Until(l.until) > l.margin }

// release gives the lease up early when it is certainly still held;
// otherwise it lets it expire.
func (l *lease) release(ctx context.Context) error {
	if !l.live() {
		return nil
	}
	v, err := l.kv.Get(ctx, l.key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading lease %s: %w", l.key, err)
	}
	if !bytes.Equal(v, l.holder) {
		l.until = time.Time{} // not ours (clocks disagree): stop at once
		return nil
	}
	if !l.live() {
		return nil
	}
	if err := l.kv.Delete(ctx, l.key); err != nil {
		return fmt.Errorf("releasing lease %s: %w", l.key, err)
	}
	l.until = time.Time{}
	return nil
}

// renew ends this term and takes the next one, if nobody took it in
// between; false means another process holds the stream now.
func (l *lease) renew(ctx context.Context, ttl time.Duration) (bool, error) {
	if err := l.release(ctx); err != nil {
		return false, err
	}
	until := time.Now().Add(ttl)
	ok, err := l.kv.PutIfAbsent(ctx, l.key, l.holder, ttl)
	if err != nil || !ok {
		return false, err
	}
	l.until = until
	return true, nil
}

// clearLeases deletes every stream lease: only for a store this process
// owns alone, where any lease is a dead predecessor's.
func clearLeases(ctx context.Context, kv storage.KV) error {
	keys, err := kv.List(ctx, leasePrefix)
	if err != nil {
		return fmt.Errorf("listing leases: %w", err)
	}
	for _, k := range keys {
		if err := kv.Delete(ctx, k); err != nil {
			return fmt.Errorf("clearing lease %s: %w", k, err)
		}
	}
	return nil
}
