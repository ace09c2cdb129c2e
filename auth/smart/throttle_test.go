package smart

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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

// TestSourceLimits: each source has its own budget, the table never grows
// past its bound under a spray of new sources, and idle sources are swept
// to make room.
func TestSourceLimits(t *testing.T) {
	l := newSourceLimits(3, 100)
	now := time.Unix(1_000_000, 0)
	for i := range 3 {
		if !l.allow("10.0.0.1", now) {
			t.Fatalf("check %d of a budget of 3 refused", i+1)
		}
	}
	if l.allow("10.0.0.1", now) {
		t.Error("4th check within the minute allowed")
	}
	if !l.allow("10.0.0.2", now) {
		t.Error("another source shares the first one's budget")
	}
	if !l.allow("10.0.0.1", now.Add(21*time.Second)) {
		t.Error("a check refilled after 20 s (3 a minute) is refused")
	}
	// A spray of 10,000 new sources, each spending a check.
	for i := range 10_000 {
		l.allow(fmt.Sprintf("spray-%d", i), now)
	}
	if n := len(l.buckets); n > 100 {
		t.Fatalf("table grew to %d buckets, bound 100", n)
	}
	// Once the spray's buckets have refilled, a new source gets room.
	if !l.allow("10.0.0.9", now.Add(2*time.Minute)) {
		t.Error("new source refused after the spray went idle")
	}
}
