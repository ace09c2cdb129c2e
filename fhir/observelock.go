package fhir

import (
	"context"
	"errors"
	"slices"
	"sync"
)

// keyLocks are the in-process locks of CommitSet.Serialize: one per key,
// created on first use and dropped when nobody holds or waits for it.
type keyLocks struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

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
		return nil
	case <-ctx.Done():
		k.drop(key, l)
		return ctx.Err()
	}
}

func (k *keyLocks) tryLock(key string) bool {
	l := k.entry(key)
	select {
	case l.ch <- struct{}{}:
		return true
	default:
		k.drop(key, l)
		return false
	}
}

func (k *keyLocks) unlock(key string) {
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
// process: call it before reading what the derived writes depend on, and
// the reads see every earlier Commit for the key. Without it, two changes
// that each alone derive nothing but together raise an alert (two readings
// of a "2 of 3" rule, an opioid and a benzodiazepine) could both be
// observed before either is stored, and the alert would wait for the next
// change. Compare-and-set on derived writes still guards what several
// processes sharing one database (MongoDB replicas) do at once.
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
	if cs.s.keyLocks.tryLock(key) {
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
			cs.release()
			return err
		}
		cs.held = append(cs.held, k)
	}
	return nil
}

// release gives back the keys the set holds.
func (cs *CommitSet) release() {
	for _, k := range cs.held {
		cs.s.keyLocks.unlock(k)
	}
	cs.held = nil
}
