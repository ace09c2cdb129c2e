package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/lease"
)

// The expiry sweep of a store whose expired KV records are not removed by
// the database (storage.ExpirySweeper: FerretDB). One process of those on
// the store sweeps at a time, under the lease sweepLeaseKey.
const (
	sweepLeaseKey = "storage/sweep/kv"
	sweepEvery    = time.Minute
	sweepBatch    = 500
)

// runExpirySweep sweeps every interval until ctx ends, when the backend
// has an expiry sweep; the returned function stops it and waits.
func runExpirySweep(ctx context.Context, be storage.Backend, ttl, every time.Duration, log *slog.Logger) func() {
	sw, ok := storage.As[storage.ExpirySweeper](be)
	if !ok {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	owner := lease.NewOwner()
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if n, held, err := sweepOnce(ctx, be.KV(), sw, owner, ttl); err != nil && ctx.Err() == nil {
				log.WarnContext(ctx, "expiry sweep", "err", err, "removed", n)
			} else if held && n > 0 {
				log.DebugContext(ctx, "expiry sweep", "removed", n)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}

// sweepOnce removes expired records in batches until a batch comes back
// short, while holding the sweep lease; held is false when another
// process holds it (and sweeps).
func sweepOnce(ctx context.Context, kv storage.KV, sw storage.ExpirySweeper, owner string, ttl time.Duration) (removed int, held bool, err error) {
	held, err = lease.Hold(ctx, kv, sweepLeaseKey, owner, ttl, func(lctx context.Context) error {
		for lctx.Err() == nil {
			n, err := sw.SweepExpired(lctx, sweepBatch)
			removed += n
			if err != nil || n < sweepBatch {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, lease.ErrLost) {
		err = nil // another process sweeps on
	}
	return removed, held, err
}
