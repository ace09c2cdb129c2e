package mongo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Conditional KV changes (CompareAndSwap, CompareAndDelete and the
// removal of an expired record) cannot rely on a conditional update or
// delete being atomic: FerretDB evaluates the filter, then writes by _id,
// so two callers may both see the old value and both write. The one
// atomic step every deployment offers is the insert of a unique _id, so a
// conditional change is:
//
//  1. read the record and compare (live, value) in Go;
//  2. lock its generation g by inserting kvlocks {_id: key␀g}: of the
//     callers that read the same generation one inserts, the others lose;
//  3. replace (or delete) the record where {_id: key, g}; a replace draws a
//     new generation, so the generation that was compared never changes
//     twice;
//  4. remove the lock. A lock found again later for a generation that is
//     gone is harmless: step 3 matches nothing.
//
// A caller that dies between 2 and 4 leaves its lock, and the generation
// could never change again through a conditional call; such a lock is
// broken once it is older than kvLockStale, by the one caller that
// inserts the lock's break marker. The lock spans one replace, so it is
// far shorter-lived than an interrupted write's claim (staleAfter): a
// lease of a few seconds must not wait a minute for a dead renewer.

// newGen draws a record generation.
func newGen() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return hex.EncodeToString(b[:])
}

// genFilter selects key at generation gen ("" for a record written before
// generations existed, which has no g).
func genFilter(key, gen string) bson.D {
	if gen == "" {
		return bson.D{{Key: "_id", Value: key}, {Key: "g", Value: bson.D{{Key: "$exists", Value: false}}}}
	}
	return bson.D{{Key: "_id", Value: key}, {Key: "g", Value: gen}}
}

type kvLock struct {
	ID    string    `bson:"_id"`
	Nonce string    `bson:"n"`
	At    time.Time `bson:"t"`
}

// lockGen takes the lock of key's generation gen and returns the unlock
// function, or nil when another caller holds it.
func (s kvStore) lockGen(ctx context.Context, key, gen string) (func(), error) {
	id := key + "\x00" + gen
	l := kvLock{ID: id, Nonce: newGen(), At: time.Now()}
	for attempt := 0; ; attempt++ {
		_, err := s.b.kvLocks.InsertOne(ctx, l)
		if err == nil {
			return func() { s.unlock(ctx, l) }, nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return nil, fmt.Errorf("lock generation: %w", err)
		}
		if attempt > 0 {
			return nil, nil
		}
		broke, err := s.breakStale(ctx, id)
		if err != nil || !broke {
			return nil, err
		}
	}
}

// unlock removes a lock; a failure leaves a lock that is broken once
// stale, so it is logged, not returned.
func (s kvStore) unlock(ctx context.Context, l kvLock) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := s.b.kvLocks.DeleteOne(ctx, bson.D{{Key: "_id", Value: l.ID}, {Key: "n", Value: l.Nonce}}); err != nil {
		s.b.log.WarnContext(ctx, "kv: remove generation lock", "lock", l.ID, "err", err)
	}
}

// breakStale removes the lock id when it is older than kvLockStale. Only
// the caller whose break marker for that lock instance (its nonce) is
// inserted removes it, so that two breakers cannot remove a fresh lock
// taken between them.
func (s kvStore) breakStale(ctx context.Context, id string) (bool, error) {
	var held kvLock
	err := s.b.kvLocks.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&held)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return true, nil // released meanwhile: race for it again
	}
	if err != nil {
		return false, fmt.Errorf("read generation lock: %w", err)
	}
	if time.Since(held.At) < s.b.kvLockStale {
		return false, nil
	}
	marker := kvLock{ID: id + "\x00broken\x00" + held.Nonce, Nonce: held.Nonce, At: time.Now()}
	if _, err := s.b.kvLocks.InsertOne(ctx, marker); err != nil {
		if mongo.IsDuplicateKeyError(err) {
			return false, nil
		}
		return false, fmt.Errorf("break generation lock: %w", err)
	}
	if _, err := s.b.kvLocks.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "n", Value: held.Nonce}}); err != nil {
		return false, fmt.Errorf("break generation lock: %w", err)
	}
	s.b.log.InfoContext(ctx, "kv: broke a stale generation lock", "lock", id, "taken", held.At)
	return true, nil
}

// current reads key; ok is false when it is absent.
func (s kvStore) current(ctx context.Context, key string) (kvDoc, bool, error) {
	var d kvDoc
	err := s.b.kv.FindOne(ctx, bson.D{{Key: "_id", Value: key}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return d, false, nil
	}
	if err != nil {
		return d, false, err
	}
	return d, true, nil
}

func (s kvStore) CompareAndSwap(ctx context.Context, key string, old, new []byte, ttl time.Duration) (bool, error) {
	ok, err := s.whenHolds(ctx, key, old, func(gen string) (bool, error) {
		r, err := s.b.kv.ReplaceOne(ctx, genFilter(key, gen), newKVDoc(key, new, ttl, time.Now()))
		if err != nil {
			return false, err
		}
		return r.MatchedCount == 1, nil
	})
	if err != nil {
		return false, fmt.Errorf("mongo: kv compare-and-swap %q: %w", key, err)
	}
	return ok, nil
}

func (s kvStore) CompareAndDelete(ctx context.Context, key string, old []byte) (bool, error) {
	ok, err := s.whenHolds(ctx, key, old, func(gen string) (bool, error) {
		r, err := s.b.kv.DeleteOne(ctx, genFilter(key, gen))
		if err != nil {
			return false, err
		}
		return r.DeletedCount == 1, nil
	})
	if err != nil {
		return false, fmt.Errorf("mongo: kv compare-and-delete %q: %w", key, err)
	}
	return ok, nil
}

// whenHolds runs change on key's generation, under its lock, when key is
// live and holds old. While another caller holds the lock it waits for
// that caller's outcome instead of reporting a loss: the contract's false
// means the value is not old (or another caller won), and a caller that
// died holding the lock has changed nothing; its lock is broken once
// older than kvLockStale. Without the wait, a worker killed in the middle
// of a checkpoint made every other process believe, for a minute, that
// the record had changed under it.
func (s kvStore) whenHolds(ctx context.Context, key string, old []byte, change func(gen string) (bool, error)) (bool, error) {
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		d, ok, err := s.current(ctx, key)
		if err != nil {
			return false, err
		}
		if !ok || !d.live(time.Now()) || !bytes.Equal(d.Value, old) {
			return false, nil
		}
		unlock, err := s.lockGen(ctx, key, d.Gen)
		if err != nil {
			return false, err
		}
		if unlock != nil {
			changed, err := change(d.Gen)
			unlock()
			return changed, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-t.C:
		}
	}
}

// removeExpired deletes key when it is expired at now, under its
// generation lock. It reports whether the key is now free: true when it
// removed the record or found none, false when the record is live or
// another caller is changing it.
func (s kvStore) removeExpired(ctx context.Context, key string, now time.Time) (bool, error) {
	d, ok, err := s.current(ctx, key)
	if err != nil {
		return false, fmt.Errorf("remove expired: %w", err)
	}
	if !ok {
		return true, nil
	}
	if d.live(now) {
		return false, nil
	}
	unlock, err := s.lockGen(ctx, key, d.Gen)
	if err != nil || unlock == nil {
		return false, err
	}
	defer unlock()
	if _, err := s.b.kv.DeleteOne(ctx, genFilter(key, d.Gen)); err != nil {
		return false, fmt.Errorf("remove expired: %w", err)
	}
	return true, nil
}

// wrapKV wraps a lock error, or gives nil for a lost lock (not an error:
// the conditional call simply did not win).
func wrapKV(op, key string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("mongo: kv %s %q: %w", op, key, err)
}

var _ storage.KV = kvStore{}
