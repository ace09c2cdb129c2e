package mongo

import (
	"testing"
	"time"
)

// TestKVGenerationLock simulates a caller that died between locking a
// record's generation and changing it: while its lock is fresh every
// conditional change loses (it may belong to a change in flight); once it
// is stale, the next caller breaks it and wins.
func TestKVGenerationLock(t *testing.T) {
	ctx := t.Context()
	for _, c := range []struct {
		name   string
		age    time.Duration
		wantOK bool
	}{
		{"fresh lock", 0, false},
		{"stale lock", 2 * staleClaimAge, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := fresh(t)
			kv := b.KV().(kvStore)
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
			swapped, err := kv.CompareAndSwap(ctx, "lease", []byte("a"), []byte("b"), time.Hour)
			if err != nil || swapped != c.wantOK {
				t.Fatalf("CompareAndSwap = %v, %v; want %v", swapped, err, c.wantOK)
			}
			deleted, err := kv.CompareAndDelete(ctx, "lease", []byte("a"))
			if err != nil || deleted {
				t.Fatalf("CompareAndDelete of the old value = %v, %v; want false", deleted, err)
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
