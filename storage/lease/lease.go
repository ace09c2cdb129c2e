// Package lease gives one process among several sharing a store the
// exclusive, expiring ownership of a named piece of background work (an
// export job, a reindex, a subscription's delivery): a lease is a KV record
// whose value is the holder and whose expiry is the end of the holding.
//
//   - Acquire takes a free (absent or expired) lease, or renews one the
//     owner already holds, and reports whether the owner holds it now.
//   - Renew extends the owner's lease by ttl; false means it was lost
//     (expired and taken over, or released).
//   - Release frees the owner's lease at once; a lease held by another
//     owner is left alone.
//   - Hold runs a function while holding and renewing a lease, cancels the
//     function's context (cause ErrLost) when the lease is lost, and
//     releases it when the function returns.
//
// A process that dies stops renewing; its leases expire after ttl and the
// next Acquire elsewhere takes them over. The work must therefore resume
// from a checkpoint that it writes while holding the lease, and tolerate
// being run again from that checkpoint: a holder that stalls longer than
// ttl (a pause, a partition) may still be finishing a step when its
// successor starts, since expiry is judged by each process's own clock.
// Hold narrows that window by cancelling its function before the lease
// can expire (after 5/6 of ttl without a confirmed renewal), but cannot
// close it: a lease is mutual exclusion for well-behaved holders, not a
// fence against a stalled one.
//
// The record's value is the owner string exactly (UTF-8 bytes, nothing
// else), so that an operator can read who holds a lease with any KV
// reader; the conditional KV calls (storage.KV CompareAndSwap,
// CompareAndDelete, PutIfAbsent) make every change atomic on every
// backend. An owner names one holder: two goroutines that share an owner
// string share its leases, so every worker draws its own with NewOwner.
//
// The package knows only storage.KV; it knows nothing of jobs, FHIR or
// a particular backend.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// ErrLost is the context cause Hold gives its function when the lease is
// lost, and the error Hold returns then.
var ErrLost = errors.New("lease: lost")

// NewOwner returns an owner name unique to this call: host, process id and
// a random suffix, so that a log line or a KV dump shows where it runs.
func NewOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

func check(key, owner string, ttl time.Duration) error {
	switch {
	case key == "":
		return errors.New("lease: empty key")
	case owner == "":
		return fmt.Errorf("lease %q: empty owner", key)
	case ttl <= 0:
		// A lease without expiry would never be handed over.
		return fmt.Errorf("lease %q: ttl %s is not positive", key, ttl)
	}
	return nil
}

// Acquire takes the lease key for owner for ttl when it is free, or renews
// it when owner holds it already. It reports whether owner holds it.
func Acquire(ctx context.Context, kv storage.KV, key, owner string, ttl time.Duration) (bool, error) {
	if err := check(key, owner, ttl); err != nil {
		return false, err
	}
	won, err := kv.PutIfAbsent(ctx, key, []byte(owner), ttl)
	if err != nil {
		return false, fmt.Errorf("lease %q: acquire: %w", key, err)
	}
	if won {
		return true, nil
	}
	return Renew(ctx, kv, key, owner, ttl)
}

// Renew extends owner's lease key to ttl from now. False means owner does
// not hold it (any more): the work it guards must stop.
func Renew(ctx context.Context, kv storage.KV, key, owner string, ttl time.Duration) (bool, error) {
	if err := check(key, owner, ttl); err != nil {
		return false, err
	}
	ok, err := kv.CompareAndSwap(ctx, key, []byte(owner), []byte(owner), ttl)
	if err != nil {
		return false, fmt.Errorf("lease %q: renew: %w", key, err)
	}
	return ok, nil
}

// Release frees owner's lease key. Releasing a lease owner does not hold
// (expired, taken over, never taken) is not an error and changes nothing.
func Release(ctx context.Context, kv storage.KV, key, owner string) error {
	if _, err := kv.CompareAndDelete(ctx, key, []byte(owner)); err != nil {
		return fmt.Errorf("lease %q: release: %w", key, err)
	}
	return nil
}

// Holder returns the owner holding lease key; storage.ErrNotFound when it
// is free.
func Holder(ctx context.Context, kv storage.KV, key string) (string, error) {
	v, err := kv.Get(ctx, key)
	if err != nil {
		return "", fmt.Errorf("lease %q: holder: %w", key, err)
	}
	return string(v), nil
}

// Hold acquires lease key for owner and runs fn while renewing it every
// ttl/3. It returns (false, nil) without running fn when another owner
// holds the lease. When a renewal answers that the lease is gone, or no
// renewal has succeeded for 5/6 of ttl (the store is unreachable), fn's
// context is cancelled with cause ErrLost and Hold returns an error
// wrapping ErrLost and fn's error. Otherwise the lease is released when fn
// returns, and Hold returns fn's error.
func Hold(ctx context.Context, kv storage.KV, key, owner string, ttl time.Duration, fn func(context.Context) error) (bool, error) {
	ok, err := Acquire(ctx, kv, key, owner, ttl)
	if err != nil || !ok {
		return false, err
	}
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := make(chan struct{})
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		keep(wctx, kv, key, owner, ttl, cancel, stop)
	}()
	ferr := fn(wctx)
	close(stop)
	<-kept
	if cause := context.Cause(wctx); errors.Is(cause, ErrLost) {
		if ferr == nil {
			return true, cause
		}
		return true, fmt.Errorf("%w: %w", cause, ferr)
	}
	// Release even when ctx was cancelled (a shutdown): the next process
	// may take the work over at once instead of after ttl.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), ttl)
	defer rcancel()
	if err := Release(rctx, kv, key, owner); err != nil {
		return true, errors.Join(ferr, err)
	}
	return true, ferr
}

// keep renews the lease until stop is closed or ctx ends, and cancels with
// ErrLost when the lease is lost or cannot be confirmed in time.
func keep(ctx context.Context, kv storage.KV, key, owner string, ttl time.Duration, cancel context.CancelCauseFunc, stop <-chan struct{}) {
	every := ttl / 3
	retry := max(ttl/12, time.Millisecond)
	giveUp := ttl - ttl/6
	confirmed := time.Now() // Acquire succeeded just before
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		if d := confirmed.Add(giveUp).Sub(start); d <= 0 {
			cancel(fmt.Errorf("%w: %q not renewed for %s", ErrLost, key, start.Sub(confirmed).Round(time.Millisecond)))
			return
		}
		rctx, rcancel := context.WithDeadline(ctx, confirmed.Add(giveUp))
		ok, err := Renew(rctx, kv, key, owner, ttl)
		rcancel()
		switch {
		case err == nil && ok:
			// The new expiry is at least start+ttl.
			confirmed = start
			t.Reset(every)
		case err == nil:
			cancel(fmt.Errorf("%w: %q is no longer held by %s", ErrLost, key, owner))
			return
		default:
			// Unreachable store: retry soon, until giveUp.
			t.Reset(min(retry, max(time.Until(confirmed.Add(giveUp)), 0)))
		}
	}
}
