package storage

import (
	"context"
	"fmt"
)

// Event is one item of the durable outbox: something a write causes to be
// delivered later (a subscription notification), stored by the same
// Commit as the write so that an acknowledged change never loses it and a
// refused change leaves none behind (the transactional outbox pattern).
//
// Why the outbox rides on Write instead of being a write of its own: an
// event belongs to the version that caused it. It takes that version's
// Seq, so its order in its stream is the commit order of the changes, and
// every atomicity mechanism a backend has for writes (a transaction, the
// MongoDB commit record) covers it without a second kind of write.
//
// The backend never looks inside Data; the package that enqueues owns its
// encoding (and pins it with tests).
type Event struct {
	// Stream groups events that are read in order (one Subscription's
	// notifications). At most 256 bytes.
	Stream string
	// ID is unique over the outbox, chosen by the caller (a random id);
	// receivers de-duplicate with it. At most 256 bytes.
	ID string
	// Data is the opaque payload.
	Data []byte
	// Seq is the Seq of the write that carried the event (assigned by the
	// Commit; zero in Write.Events). Events of one write keep their order.
	Seq int64
}

// Outbox is implemented by backends that store Write.Events. A backend
// that does not implement it must refuse a Commit carrying events rather
// than drop them.
//
// Events are read and removed; what happens in between (who delivers, for
// how long) is the caller's: several processes share a stream safely by
// leasing it with KV.PutIfAbsent, which keeps leases out of the backends.
type Outbox interface {
	// OutboxStreams lists the streams that hold events, in byte order,
	// after the stream named after (empty: from the start), at most n.
	OutboxStreams(ctx context.Context, after string, n int) ([]string, error)
	// OutboxRead returns up to n events of stream, oldest first (by Seq,
	// then by position in their write). It never returns an event of a
	// commit that is not yet decided, nor an event after one: a stream is
	// read as a prefix of its commit order.
	OutboxRead(ctx context.Context, stream string, n int) ([]Event, error)
	// OutboxDelete removes events of stream by id (acknowledged or dropped);
	// ids that are absent are ignored.
	OutboxDelete(ctx context.Context, stream string, ids ...string) error
	// OutboxPurge removes every event of stream.
	OutboxPurge(ctx context.Context, stream string) error
}

// Limits on Event fields, checked by backends at Commit.
const (
	MaxEventStream = 256
	MaxEventID     = 256
)

// CheckEvents reports the first malformed event of a Commit: an empty or
// overlong Stream or ID, or an ID used twice in the Commit. Backends call
// it before writing anything (an ID already in the outbox is theirs to
// refuse).
func CheckEvents(writes []Write) error {
	seen := map[string]bool{}
	for i := range writes {
		for j, ev := range writes[i].Events {
			switch {
			case ev.Stream == "" || len(ev.Stream) > MaxEventStream:
				return fmt.Errorf("storage: write %d event %d: stream must be 1 to %d bytes", i, j, MaxEventStream)
			case ev.ID == "" || len(ev.ID) > MaxEventID:
				return fmt.Errorf("storage: write %d event %d: id must be 1 to %d bytes", i, j, MaxEventID)
			case seen[ev.ID]:
				return fmt.Errorf("storage: write %d event %d: id %q used twice in one commit", i, j, ev.ID)
			}
			seen[ev.ID] = true
		}
	}
	return nil
}
