package mongo

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestKVGenerationLock simulates a caller that died between locking a
// record's generation and changing it: while its lock is fresh a
// conditional change waits (the lock may belong to a change in flight,
// whose outcome decides); once it is older than kvLockStaleAge, though
// far younger than a write's claim, the next caller breaks it and wins.
func TestKVGenerationLock(t *testing.T) {
	for _, c := range []struct {
		name   string
		age    time.Duration
		wantOK bool
	}{
		{"fresh lock", 0, false},
		{"stale lock", kvLockStaleAge + time.Second, true},
		{"older than a lease, younger than a claim", staleClaimAge / 2, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := fresh(t)
			kv := b.KV().(kvStore)
			ctx := t.Context()
			if err := kv.Put(ctx, "lease", []byte("a"), time.Hour); err != nil {
				t.Fatal(err)
			}
			d, ok, err := kv.current(ctx, "lease")
			if err != nil || !ok || d.Gen == "" {
				t.Fatalf("current = %+v, %v, %v", d, ok, err)
			}
			if _, err := b.kvLocks.InsertOne(ctx, kvLock{ID: "lease\x00" + d.Gen, Nonce: "dead", At: time.Now().Add(-c.age)}); err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			swapped, err := kv.CompareAndSwap(wctx, "lease", []byte("a"), []byte("b"), time.Hour)
			if c.wantOK {
				if err != nil || !swapped {
					t.Fatalf("CompareAndSwap = %v, %v; want true", swapped, err)
				}
			} else if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("CompareAndSwap over a fresh lock = %v, %v; want it to wait until the deadline", swapped, err)
			}
			deleted, err := kv.CompareAndDelete(ctx, "lease", []byte("z"))
			if err != nil || deleted {
				t.Fatalf("CompareAndDelete of a value never held = %v, %v; want false at once", deleted, err)
			}
			want := "a"
			if c.wantOK {
				want = "b"
			}
			if got, err := kv.Get(ctx, "lease"); err != nil || string(got) != want {
				t.Fatalf("Get = %q, %v; want %q", got, err, want)
			}
			// A successful change removes its own lock: the new
			// generation can be changed again at once.
			if c.wantOK {
				deleted, err := kv.CompareAndDelete(ctx, "lease", []byte("b"))
				if err != nil || !deleted {
					t.Fatalf("CompareAndDelete of the new value = %v, %v; want true", deleted, err)
				}
				n, err := b.kvLocks.CountDocuments(ctx, map[string]any{})
				if err != nil || n != 1 { // the break marker stays
					t.Fatalf("locks left = %d, %v; want only the break marker", n, err)
				}
			}
		})
	}
}

// TestKVLockWaitsForOutcome: a conditional change that finds another
// caller's fresh lock reports that caller's outcome, not a loss of its
// own: it loses when the holder changed the value, and wins when the
// holder gave up without changing it.
func TestKVLockWaitsForOutcome(t *testing.T) {
	for _, holderChanges := range []bool{true, false} {
		t.Run(fmt.Sprintf("holder changes: %v", holderChanges), func(t *testing.T) {
			b := fresh(t)
			kv := b.KV().(kvStore)
			ctx := t.Context()
			if err := kv.Put(ctx, "job", []byte("a"), 0); err != nil {
				t.Fatal(err)
			}
			d, _, err := kv.current(ctx, "job")
			if err != nil {
				t.Fatal(err)
			}
			unlock, err := kv.lockGen(ctx, "job", d.Gen)
			if err != nil || unlock == nil {
				t.Fatalf("lockGen = %v, %v", unlock != nil, err)
			}
			done := make(chan error, 1)
			go func() {
				time.Sleep(300 * time.Millisecond)
				if holderChanges {
					if _, err := b.kv.ReplaceOne(ctx, genFilter("job", d.Gen), newKVDoc("job", []byte("h"), 0, time.Now())); err != nil {
						done <- err
						return
					}
				}
				unlock()
				done <- nil
			}()
			swapped, err := kv.CompareAndSwap(ctx, "job", []byte("a"), []byte("w"), 0)
			if herr := <-done; herr != nil {
				t.Fatal(herr)
			}
			if err != nil || swapped == holderChanges {
				t.Fatalf("CompareAndSwap = %v, %v; want %v", swapped, err, !holderChanges)
			}
			want := "w"
			if holderChanges {
				want = "h"
			}
			if got, err := kv.Get(ctx, "job"); err != nil || string(got) != want {
				t.Fatalf("Get = %q, %v; want %q", got, err, want)
			}
		})
	}
}

// TestKVRecordWithoutGeneration: a record written before generations
// existed (no g) still takes part in conditional changes.
func TestKVRecordWithoutGeneration(t *testing.T) {
	ctx := t.Context()
	b := fresh(t)
	kv := b.KV().(kvStore)
	if _, err := b.kv.InsertOne(ctx, map[string]any{"_id": "old", "v": []byte("a")}); err != nil {
		t.Fatal(err)
	}
	swapped, err := kv.CompareAndSwap(ctx, "old", []byte("a"), []byte("b"), 0)
	if err != nil || !swapped {
		t.Fatalf("CompareAndSwap = %v, %v; want true", swapped, err)
	}
	if got, err := kv.Get(ctx, "old"); err != nil || string(got) != "b" {
		t.Fatalf("Get = %q, %v", got, err)
	}
}
