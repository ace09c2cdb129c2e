package smart

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

func TestHashGateBoundsConcurrencyAndQueue(t *testing.T) {
	g := newHashGate(2, 1)
	release := make(chan struct{})
	var running, peak atomic.Int32
	var started sync.WaitGroup
	started.Add(2)
	var done sync.WaitGroup
	for range 2 {
		done.Add(1)
		go func() {
			defer done.Done()
			_ = g.do(context.Background(), func() {
				n := running.Add(1)
				if n > peak.Load() {
					peak.Store(n)
				}
				started.Done()
				<-release
				running.Add(-1)
			})
		}()
	}
	started.Wait()
	// Third request queues; cancelling its context frees it.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.do(ctx, func() { t.Error("queued request ran while slots were full") }) }()
	for len(g.queue) < 3 {
		runtime.Gosched()
	}
	// Fourth is beyond the queue bound: refused at once.
	if err := g.do(context.Background(), func() {}); !errors.Is(err, errHashBusy) {
		t.Fatalf("over the queue bound: got %v, want errHashBusy", err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: got %v, want context.Canceled", err)
	}
	close(release)
	done.Wait()
	if peak.Load() > 2 {
		t.Fatalf("%d hashes ran at once, want at most 2", peak.Load())
	}
	if err := g.do(context.Background(), func() {}); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

// TestSourceLimits: each source has its own budget, kept in the store:
// two limiters on one SQLite store (two server processes) spend from the
// same budget, concurrent checks each spend once, and a spent budget
// refills at its rate.
func TestSourceLimits(t *testing.T) {
	ctx := t.Context()
	be, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	a, b := newSourceLimits(kv{be.KV()}, 3), newSourceLimits(kv{be.KV()}, 3)
	now := time.Now()
	allow := func(l *sourceLimits, source string, at time.Time) bool {
		t.Helper()
		ok, err := l.allow(ctx, source, at)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	for i, l := range []*sourceLimits{a, b, a} {
		if !allow(l, "10.0.0.1", now) {
			t.Fatalf("check %d of a budget of 3 refused", i+1)
		}
	}
	if allow(b, "10.0.0.1", now) {
		t.Error("4th check within the minute allowed on the other limiter")
	}
	if !allow(b, "10.0.0.2", now) {
		t.Error("another source shares the first one's budget")
	}
	if allow(a, "10.0.0.1", now.Add(19*time.Second)) {
		t.Error("a check allowed after 19 s: a token takes 20 s at 3 a minute")
	}
	if !allow(a, "10.0.0.1", now.Add(21*time.Second)) {
		t.Error("a check refilled after 21 s (3 a minute) is refused")
	}
	// 40 concurrent checks of one fresh source over both limiters: exactly
	// the budget's 3 pass.
	var passed atomic.Int32
	var wg sync.WaitGroup
	for i := range 40 {
		l := []*sourceLimits{a, b}[i%2]
		wg.Go(func() {
			ok, err := l.allow(ctx, "10.0.0.3", now)
			if err != nil {
				t.Error(err)
			}
			if ok {
				passed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := passed.Load(); n != 3 {
		t.Fatalf("%d of 40 concurrent checks passed, want the budget's 3", n)
	}
}
