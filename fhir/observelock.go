package fhir

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/lease"
)

// keyLocks are the locks of CommitSet.Serialize: one in-process lock per
// key, created on first use and dropped when nobody holds or waits for
// it, and, when kv is set, a lease on the key in the store's KV
// (serializeLeasePrefix + key, storage/lease) taken while holding the
// in-process one, so that the servers sharing one store (replicas on one
// MongoDB, processes on one SQLite file) take turns too. Within a process
// the channel queues waiters; across processes a waiter polls the lease
// (serializePollMin doubling to serializePollMax). A lease outlives a
// holder that died by ttl at most (serializeLeaseTTL, or Config.LeaseTTL
// when shorter); a holder stalled beyond ttl may
// overlap its successor, which the compare-and-set of derived writes
// still guards (CommitSet.Put).
type keyLocks struct {
	mu    sync.Mutex
	locks map[string]*keyLock

	kv    storage.KV // nil: in-process only (Config.SerializeInProcess)
	owner string
	ttl   time.Duration
}

const (
	serializeLeasePrefix = "fhir/serialize/"
	// serializeLeaseTTL bounds how long a key stays with a process that
	// died holding it (a restart after kill -9 waits that long for the
	// patient): a Commit takes far less, and one that takes more only
	// loses the turn, not data.
	serializeLeaseTTL = 5 * time.Second
	serializePollMin  = 2 * time.Millisecond
	serializePollMax  = 50 * time.Millisecond
)

type keyLock struct {
	ch   chan struct{} // holds a token while locked
	refs int           // holders and waiters
}

func (k *keyLocks) entry(key string) *keyLock {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{ch: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.refs++
	return l
}

func (k *keyLocks) drop(key string, l *keyLock) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if l.refs--; l.refs == 0 {
		delete(k.locks, key)
	}
}

func (k *keyLocks) lock(ctx context.Context, key string) error {
	l := k.entry(key)
	select {
	case l.ch <- struct{}{}:
	case <-ctx.Done():
		k.drop(key, l)
		return ctx.Err()
	}
	if k.kv == nil {
		return nil
	}
	wait := serializePollMin
	for {
		ok, err := lease.Acquire(ctx, k.kv, serializeLeasePrefix+key, k.owner, k.ttl)
		if err == nil && ok {
			return nil
		}
		if err == nil {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
				wait = min(2*wait, serializePollMax)
				continue
			case <-ctx.Done():
				t.Stop()
				err = ctx.Err()
			}
		}
		k.unlockLocal(key)
		return fmt.Errorf("serializing on %s: %w", key, err)
	}
}

// tryLock takes key if it is free here and in the store, without waiting.
func (k *keyLocks) tryLock(ctx context.Context, key string) bool {
	l := k.entry(key)
	select {
	case l.ch <- struct{}{}:
	default:
		k.drop(key, l)
		return false
	}
	if k.kv == nil {
		return true
	}
	if ok, err := lease.Acquire(ctx, k.kv, serializeLeasePrefix+key, k.owner, k.ttl); err != nil || !ok {
		// An error is met again by lock, which reports it.
		k.unlockLocal(key)
		return false
	}
	return true
}

// unlock releases the lease (even when ctx is cancelled: the next holder
// should not wait for its expiry) and the in-process lock. A release the
// store refuses leaves the lease to expire.
func (k *keyLocks) unlock(ctx context.Context, key string) error {
	var err error
	if k.kv != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.ttl)
		err = lease.Release(rctx, k.kv, serializeLeasePrefix+key, k.owner)
		cancel()
	}
	k.unlockLocal(key)
	return err
}

func (k *keyLocks) unlockLocal(key string) {
	k.mu.Lock()
	l := k.locks[key]
	k.mu.Unlock()
	<-l.ch
	k.drop(key, l)
}

// errRelock tells observe to start over holding more keys: a CommitSet
// that holds keys never waits for another one (two sets could wait for
// each other), it gives its keys back and takes them all in order.
var errRelock = errors.New("commit observers: serialization keys must be taken again in order")

// Serialize makes the Commits that call it with the same key (a patient's
// alerts: "rpm/Patient/123") observe and commit one at a time in this
// process and in every other server on the same store (unless
// Config.SerializeInProcess): call it before reading what the derived
// writes depend on, and
// the reads see every earlier Commit for the key. Without it, two changes
// that each alone derive nothing but together raise an alert (two readings
// of a "2 of 3" rule, an opioid and a benzodiazepine) could both be
// observed before either is stored, and the alert would wait for the next
// change. Compare-and-set on derived writes still guards a holder that
// stalled past its lease.
//
// An error it returns must be returned by the observer as is (or wrapped
// with %w): the observers then run again with the key held.
func (cs *CommitSet) Serialize(ctx context.Context, key string) error {
	if slices.Contains(cs.held, key) {
		return nil
	}
	if len(cs.held) == 0 {
		if err := cs.s.keyLocks.lock(ctx, key); err != nil {
			return err
		}
		cs.held = append(cs.held, key)
		return nil
	}
	if cs.s.keyLocks.tryLock(ctx, key) {
		cs.held = append(cs.held, key)
		return nil
	}
	cs.relock = append(slices.Clone(cs.held), key)
	return errRelock
}

// lockAll takes keys (sorted, distinct) in order; all of them or none.
func (cs *CommitSet) lockAll(ctx context.Context, keys []string) error {
	for _, k := range keys {
		if err := cs.s.keyLocks.lock(ctx, k); err != nil {
			cs.release(ctx)
			return err
		}
		cs.held = append(cs.held, k)
	}
	return nil
}

// release gives back the keys the set holds.
func (cs *CommitSet) release(ctx context.Context) {
	for _, k := range cs.held {
		if err := cs.s.keyLocks.unlock(ctx, k); err != nil {
			cs.s.log.WarnContext(ctx, "serialization lease not released: it expires on its own", "key", k, "err", err)
		}
	}
	cs.held = nil
}
