package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/storage"
)

// ErrClosed is returned by GroupCommit.RecordAudit after Close.
var ErrClosed = errors.New("audit: writer closed")

// GroupCommit is an AuditSink that stores the events of concurrent
// requests together: one writer goroutine takes every event that arrived
// while the previous Commit was running and stores them in one Commit, so
// that N concurrent requests share one durable write (one fsync on SQLite)
// instead of paying for N.
//
// Durability is unchanged: RecordAudit returns only after the Commit that
// holds its event has returned, and the audit middleware calls it before
// the handler returns, so a response the client has received in full is
// never missing its AuditEvent.
type GroupCommit struct {
	backend  storage.Backend
	index    Indexer
	log      *slog.Logger
	maxBatch int
	timeout  time.Duration
	onBatch  func(events int)

	// mu orders RecordAudit's send against Close's close(queue): senders
	// hold it shared, Close exclusively.
	mu     sync.RWMutex
	closed bool
	queue  chan pending
	done   chan struct{}
}

type pending struct {
	w    storage.Write
	done chan error
}

// GroupOption tunes a GroupCommit.
type GroupOption func(*GroupCommit)

// WithMaxBatch caps the number of events in one Commit (default 256).
func WithMaxBatch(n int) GroupOption {
	return func(g *GroupCommit) {
		if n > 0 {
			g.maxBatch = n
		}
	}
}

// WithBatchObserver is told the number of events of every group commit
// (for the batch-size metric); it runs on the writer goroutine.
func WithBatchObserver(f func(events int)) GroupOption {
	return func(g *GroupCommit) { g.onBatch = f }
}

// QueueLen is the number of events waiting for the writer.
func (g *GroupCommit) QueueLen() int { return len(g.queue) }

// NewGroupCommit starts the writer. Close it to drain and stop it.
func NewGroupCommit(backend storage.Backend, index Indexer, log *slog.Logger, opts ...GroupOption) *GroupCommit {
	if log == nil {
		log = slog.Default()
	}
	g := &GroupCommit{backend: backend, index: index, log: log, maxBatch: 256, timeout: 30 * time.Second}
	for _, o := range opts {
		o(g)
	}
	g.queue = make(chan pending, g.maxBatch)
	g.done = make(chan struct{})
	go g.loop()
	return g
}

var _ auth.AuditPreparer = (*GroupCommit)(nil)

// PrepareAudit returns the write of ev's AuditEvent without storing it: a
// write request commits its record with its data, not through the queue.
func (g *GroupCommit) PrepareAudit(ev auth.AuditEvent) (storage.Write, error) {
	return prepare(g.index, ev)
}

// RecordAudit stores ev and returns once it is durable (or failed). The
// encoding and index extraction run on the caller's goroutine, so only the
// Commit itself is serialised.
func (g *GroupCommit) RecordAudit(ctx context.Context, ev auth.AuditEvent) error {
	w, err := prepare(g.index, ev)
	if err != nil {
		return err
	}
	p := pending{w: w, done: make(chan error, 1)}
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		return ErrClosed
	}
	select {
	case g.queue <- p:
	case <-ctx.Done():
		g.mu.RUnlock()
		return fmt.Errorf("audit: queueing AuditEvent/%s: %w", w.ID, ctx.Err())
	}
	g.mu.RUnlock()
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		// The event may still be stored; the caller only learns that it
		// cannot count on it.
		return fmt.Errorf("audit: waiting for AuditEvent/%s: %w", w.ID, ctx.Err())
	}
}

// Close stores what is queued and stops the writer.
func (g *GroupCommit) Close() error {
	g.mu.Lock()
	if !g.closed {
		g.closed = true
		close(g.queue)
	}
	g.mu.Unlock()
	<-g.done
	return nil
}

func (g *GroupCommit) loop() {
	defer close(g.done)
	batch := make([]pending, 0, g.maxBatch)
	for p := range g.queue {
		batch = append(batch[:0], p)
	fill:
		for len(batch) < g.maxBatch {
			select {
			case q, ok := <-g.queue:
				if !ok {
					break fill
				}
				batch = append(batch, q)
			default:
				break fill
			}
		}
		g.commit(batch)
	}
}

// commit stores a batch in one Commit. When that fails (a backend without
// atomic multi-writes answers ErrUnsupported, or one write is refused),
// each event is retried alone so that one bad event cannot drop the others.
func (g *GroupCommit) commit(batch []pending) {
	// The batch serves several requests: no single request's context may
	// cancel it.
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	writes := make([]storage.Write, len(batch))
	for i, p := range batch {
		writes[i] = p.w
	}
	if g.onBatch != nil {
		g.onBatch(len(batch))
	}
	_, err := g.backend.Commit(ctx, writes...)
	if err == nil || len(batch) == 1 {
		if err != nil {
			err = fmt.Errorf("audit: store AuditEvent/%s: %w", batch[0].w.ID, err)
		}
		for _, p := range batch {
			p.done <- err
		}
		return
	}
	if !errors.Is(err, storage.ErrUnsupported) {
		g.log.Warn("audit batch commit failed; storing events one by one", "events", len(batch), "err", err)
	}
	for _, p := range batch {
		_, err := g.backend.Commit(ctx, p.w)
		if err != nil {
			err = fmt.Errorf("audit: store AuditEvent/%s: %w", p.w.ID, err)
		}
		p.done <- err
	}
}
