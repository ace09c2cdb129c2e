package smart

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
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
