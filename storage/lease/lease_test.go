package lease_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/lease"
	"github.com/anodyne-fhir/anodyne/storage/mongo"
	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

var server *mongotest.Shared

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "anodyne-lease-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server = mongotest.NewShared(dir)
	code := m.Run()
	if err := server.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// eachBackend runs fn on a fresh SQLite store and a fresh database of the
// test MongoDB server (embedded FerretDB unless ANODYNE_TEST_MONGODB_URI).
func eachBackend(t *testing.T, fn func(t *testing.T, kv storage.KV)) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Run("sqlite", func(t *testing.T) {
		b, err := sqlite.Open(t.Context(), t.TempDir(), sqlite.WithLogger(quiet))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		fn(t, b.KV())
	})
	t.Run("mongo", func(t *testing.T) {
		srv := server.Get(t)
		b, err := mongo.Open(t.Context(), srv.URI, mongotest.Database(t), mongo.WithLogger(quiet))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		fn(t, b.KV())
	})
}

func mustAcquire(t *testing.T, kv storage.KV, key, owner string, ttl time.Duration, want bool) {
	t.Helper()
	got, err := lease.Acquire(t.Context(), kv, key, owner, ttl)
	if err != nil || got != want {
		t.Fatalf("Acquire(%s) = %v, %v; want %v", owner, got, err, want)
	}
}

func wantHolder(t *testing.T, kv storage.KV, key, want string) {
	t.Helper()
	got, err := lease.Holder(t.Context(), kv, key)
	if want == "" {
		if !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Holder = %q, %v; want free", got, err)
		}
		return
	}
	if err != nil || got != want {
		t.Fatalf("Holder = %q, %v; want %q", got, err, want)
	}
	// The pinned encoding: the record's value is the owner, byte for byte.
	raw, err := kv.Get(t.Context(), key)
	if err != nil || string(raw) != want {
		t.Fatalf("raw record = %q, %v; want %q", raw, err, want)
	}
}

func TestAcquireRenewRelease(t *testing.T) {
	eachBackend(t, func(t *testing.T, kv storage.KV) {
		ctx := t.Context()
		mustAcquire(t, kv, "job/1", "a", time.Minute, true)
		mustAcquire(t, kv, "job/1", "b", time.Minute, false)
		mustAcquire(t, kv, "job/1", "a", time.Minute, true) // re-entrant: a renewal
		wantHolder(t, kv, "job/1", "a")
		if ok, err := lease.Renew(ctx, kv, "job/1", "b", time.Minute); err != nil || ok {
			t.Fatalf("Renew by a non-holder = %v, %v; want false", ok, err)
		}
		if ok, err := lease.Renew(ctx, kv, "job/1", "a", time.Minute); err != nil || !ok {
			t.Fatalf("Renew by the holder = %v, %v; want true", ok, err)
		}
		if err := lease.Release(ctx, kv, "job/1", "b"); err != nil {
			t.Fatal(err)
		}
		wantHolder(t, kv, "job/1", "a") // b's release left a's lease alone
		if err := lease.Release(ctx, kv, "job/1", "a"); err != nil {
			t.Fatal(err)
		}
		wantHolder(t, kv, "job/1", "")
		if ok, err := lease.Renew(ctx, kv, "job/1", "a", time.Minute); err != nil || ok {
			t.Fatalf("Renew after Release = %v, %v; want false", ok, err)
		}
		mustAcquire(t, kv, "job/1", "b", time.Minute, true)
		mustAcquire(t, kv, "job/2", "a", time.Minute, true) // leases are independent
	})
}

func TestExpiryTakeover(t *testing.T) {
	eachBackend(t, func(t *testing.T, kv storage.KV) {
		ctx := t.Context()
		const ttl = 150 * time.Millisecond
		// a takes the lease and dies: it never renews.
		mustAcquire(t, kv, "job", "a", ttl, true)
		mustAcquire(t, kv, "job", "b", time.Minute, false)
		time.Sleep(ttl + 50*time.Millisecond)
		mustAcquire(t, kv, "job", "b", time.Minute, true)
		wantHolder(t, kv, "job", "b")
		// a comes back: its lease is gone and it cannot harm b's.
		if ok, err := lease.Renew(ctx, kv, "job", "a", ttl); err != nil || ok {
			t.Fatalf("Renew by the expired holder = %v, %v; want false", ok, err)
		}
		if err := lease.Release(ctx, kv, "job", "a"); err != nil {
			t.Fatal(err)
		}
		mustAcquire(t, kv, "job", "a", ttl, false)
		wantHolder(t, kv, "job", "b")
	})
}

func TestHoldRenewsAndReleases(t *testing.T) {
	eachBackend(t, func(t *testing.T, kv storage.KV) {
		ctx := t.Context()
		const ttl = 300 * time.Millisecond
		var rivalWon atomic.Bool
		held, err := lease.Hold(ctx, kv, "job", "a", ttl, func(ctx context.Context) error {
			// Run for over three ttls: only renewal keeps b out.
			deadline := time.Now().Add(3*ttl + 100*time.Millisecond)
			for time.Now().Before(deadline) {
				if ok, err := lease.Acquire(ctx, kv, "job", "b", ttl); err != nil || ok {
					rivalWon.Store(ok)
					return err
				}
				select {
				case <-ctx.Done():
					return context.Cause(ctx)
				case <-time.After(50 * time.Millisecond):
				}
			}
			return nil
		})
		if err != nil || !held {
			t.Fatalf("Hold = %v, %v", held, err)
		}
		if rivalWon.Load() {
			t.Fatal("another owner acquired the lease while it was held")
		}
		// Released on return: b gets it at once, not after ttl.
		mustAcquire(t, kv, "job", "b", time.Minute, true)
		ran := false
		held, err = lease.Hold(ctx, kv, "job", "a", ttl, func(context.Context) error { ran = true; return nil })
		if err != nil || held || ran {
			t.Fatalf("Hold of a lease held by another = %v, %v, ran %v; want false without running", held, err, ran)
		}
		// fn's error is returned and the lease still released.
		boom := errors.New("boom")
		held, err = lease.Hold(ctx, kv, "other", "a", ttl, func(context.Context) error { return boom })
		if !held || !errors.Is(err, boom) {
			t.Fatalf("Hold = %v, %v; want fn's error", held, err)
		}
		wantHolder(t, kv, "other", "")
	})
}

func TestHoldCancelsWhenLost(t *testing.T) {
	eachBackend(t, func(t *testing.T, kv storage.KV) {
		ctx := t.Context()
		const ttl = 300 * time.Millisecond
		var cause error
		held, err := lease.Hold(ctx, kv, "job", "a", ttl, func(wctx context.Context) error {
			// Someone overwrites the record (an operator, a bug): the next
			// renewal finds it is not a's any more.
			if err := kv.Put(ctx, "job", []byte("thief"), time.Minute); err != nil {
				return err
			}
			select {
			case <-wctx.Done():
				cause = context.Cause(wctx)
				return wctx.Err()
			case <-time.After(5 * ttl):
				return errors.New("context not cancelled after the lease was lost")
			}
		})
		if !held || !errors.Is(err, lease.ErrLost) || !errors.Is(err, context.Canceled) {
			t.Fatalf("Hold = %v, %v; want ErrLost wrapping fn's context.Canceled", held, err)
		}
		if !errors.Is(cause, lease.ErrLost) {
			t.Fatalf("context cause = %v; want ErrLost", cause)
		}
		wantHolder(t, kv, "job", "thief") // a lost lease is not released
	})
}

// TestHoldExclusive races several owners for one lease: at no time do two
// of their functions run at once, and the lease changes hands.
func TestHoldExclusive(t *testing.T) {
	eachBackend(t, func(t *testing.T, kv storage.KV) {
		ctx := t.Context()
		var inside, maxInside, runs atomic.Int32
		owners := map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range 4 {
			owner := lease.NewOwner()
			wg.Go(func() {
				for range 5 {
					_, err := lease.Hold(ctx, kv, "job", owner, 2*time.Second, func(context.Context) error {
						n := inside.Add(1)
						defer inside.Add(-1)
						for {
							m := maxInside.Load()
							if n <= m || maxInside.CompareAndSwap(m, n) {
								break
							}
						}
						runs.Add(1)
						mu.Lock()
						owners[owner]++
						mu.Unlock()
						time.Sleep(10 * time.Millisecond)
						return nil
					})
					if err != nil {
						t.Errorf("Hold: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		if maxInside.Load() != 1 {
			t.Fatalf("%d holders ran at once", maxInside.Load())
		}
		if runs.Load() == 0 {
			t.Fatal("nobody ever held the lease")
		}
		t.Logf("%d runs by %d owners", runs.Load(), len(owners))
	})
}

func TestInvalidArguments(t *testing.T) {
	eachBackend(t, func(t *testing.T, kv storage.KV) {
		ctx := t.Context()
		for _, c := range []struct {
			key, owner string
			ttl        time.Duration
		}{
			{"", "a", time.Second},
			{"k", "", time.Second},
			{"k", "a", 0},
			{"k", "a", -time.Second},
		} {
			if ok, err := lease.Acquire(ctx, kv, c.key, c.owner, c.ttl); err == nil || ok {
				t.Errorf("Acquire(%q, %q, %s) = %v, %v; want an error", c.key, c.owner, c.ttl, ok, err)
			}
		}
		wantHolder(t, kv, "k", "")
	})
}

func TestNewOwnerIsUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		o := lease.NewOwner()
		if seen[o] || o == "" {
			t.Fatalf("NewOwner repeated or empty: %q", o)
		}
		seen[o] = true
	}
}
