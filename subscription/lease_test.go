package subscription

import (
	"context"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// TestLeaseOverKV takes, refuses, releases and renews leases over a real
// SQLite KV.
func TestLeaseOverKV(t *testing.T) {
	ctx := context.Background()
	b, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	kv := b.KV()
	a, ok, err := acquire(ctx, kv, "Subscription/s1", "A", time.Minute, time.Second)
	if err != nil || !ok {
		t.Fatalf("first acquire: %v %v", ok, err)
	}
	if _, ok, err := acquire(ctx, kv, "Subscription/s1", "B", time.Minute, time.Second); err != nil || ok {
		t.Fatalf("second holder acquired a held lease: %v %v", ok, err)
	}
	if _, ok, _ := acquire(ctx, kv, "Subscription/s2", "B", time.Minute, time.Second); !ok {
		t.Fatal("another stream's lease was not free")
	}
	if ok, err := a.renew(ctx, time.Minute); err != nil || !ok {
		t.Fatalf("renew by the holder: %v %v", ok, err)
	}
	if err := a.release(ctx); err != nil {
		t.Fatal(err)
	}
	bl, ok, err := acquire(ctx, kv, "Subscription/s1", "B", 1500*time.Millisecond, time.Second)
	if err != nil || !ok {
		t.Fatalf("acquire after release: %v %v", ok, err)
	}
	// A's stale handle must not release B's lease.
	a.until = time.Now().Add(time.Minute)
	if err := a.release(ctx); err != nil {
		t.Fatal(err)
	}
	if a.live() {
		t.Fatal("a handle that found another holder stays live")
	}
	if _, ok, _ := acquire(ctx, kv, "Subscription/s1", "C", time.Minute, time.Second); ok {
		t.Fatal("a stale handle released the new holder's lease")
	}
	// B's term runs out without release: it expires in the store.
	time.Sleep(600 * time.Millisecond)
	if bl.live() {
		t.Fatal("a lease within its margin is live")
	}
	time.Sleep(time.Second)
	if _, ok, err := acquire(ctx, kv, "Subscription/s1", "C", time.Minute, time.Second); err != nil || !ok {
		t.Fatalf("acquire after expiry: %v %v", ok, err)
	}
}
