package mongo

import (
	"context"
	"fmt"
	"slices"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/anodyne-fhir/anodyne/storage"
)

// The outbox collection holds storage.Events until they are deleted, one
// document per event: _id the event id, st the stream, s the Seq of its
// write, n its position in the write, d the data (BSON binary) and, while
// the commit record that appends it is undecided, pc naming that record.
//
// With transactions the events are inserted in the write's transaction.
// Without them, a write that carries events always goes through a commit
// record (atomic.go), even alone: the events are inserted marked pc in
// the lock step, unmarked when the record is applied and removed when it
// is aborted, so they exist exactly when their write does. A stream is
// read up to its first marked event, never past it, which keeps its
// order. Seq is drawn before such a commit, so two concurrent commits may
// become visible out of Seq order; a reader then sees the later-visible
// one after the other, in the order the commits were decided.
const colOutbox = "outbox"

var _ storage.Outbox = (*Backend)(nil)

type outboxDoc struct {
	ID      string `bson:"_id"`
	Stream  string `bson:"st"`
	Seq     int64  `bson:"s"`
	N       int    `bson:"n"`
	Data    []byte `bson:"d"`
	Pending string `bson:"pc,omitempty"`
}

func (b *Backend) outbox() *mongo.Collection { return b.db.Collection(colOutbox) }

func outboxDocs(evs []storage.Event, seq int64, pending string) []outboxDoc {
	out := make([]outboxDoc, len(evs))
	for i, ev := range evs {
		d := ev.Data
		if d == nil {
			d = []byte{}
		}
		out[i] = outboxDoc{ID: ev.ID, Stream: ev.Stream, Seq: seq, N: i, Data: d, Pending: pending}
	}
	return out
}

func hasEvents(writes []storage.Write) bool {
	for i := range writes {
		if len(writes[i].Events) > 0 {
			return true
		}
	}
	return false
}

// insertEvents inserts the event documents one by one (a duplicate id
// fails the write that carries it).
func (b *Backend) insertEvents(ctx context.Context, docs []outboxDoc) error {
	for _, d := range docs {
		if _, err := b.outbox().InsertOne(ctx, d); err != nil {
			return fmt.Errorf("mongo: outbox event %q: %w", d.ID, err)
		}
	}
	return nil
}

// OutboxStreams implements storage.Outbox. Distinct is evaluated by the
// server; the page is cut here, since distinct has no limit.
func (b *Backend) OutboxStreams(ctx context.Context, after string, n int) ([]string, error) {
	res := b.outbox().Distinct(ctx, "st", bson.D{{Key: "st", Value: bson.D{{Key: "$gt", Value: after}}}})
	var all []string
	if err := res.Decode(&all); err != nil {
		return nil, fmt.Errorf("mongo: outbox streams: %w", err)
	}
	slices.Sort(all)
	if len(all) > max(n, 1) {
		all = all[:max(n, 1)]
	}
	return all, nil
}

// OutboxRead implements storage.Outbox.
func (b *Backend) OutboxRead(ctx context.Context, stream string, n int) ([]storage.Event, error) {
	cur, err := b.outbox().Find(ctx, bson.D{{Key: "st", Value: stream}},
		options.Find().SetSort(bson.D{{Key: "s", Value: 1}, {Key: "n", Value: 1}}).SetLimit(int64(max(n, 1))))
	if err != nil {
		return nil, fmt.Errorf("mongo: outbox read %q: %w", stream, err)
	}
	var docs []outboxDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("mongo: outbox read %q: %w", stream, err)
	}
	out := make([]storage.Event, 0, len(docs))
	for _, d := range docs {
		if d.Pending != "" {
			// Undecided: stop here. A record left by a crashed writer is
			// settled by recovery once it is stale.
			if err := b.recover(ctx); err != nil {
				b.log.WarnContext(ctx, "recover commits", "err", err)
			}
			break
		}
		out = append(out, storage.Event{Stream: d.Stream, ID: d.ID, Data: d.Data, Seq: d.Seq})
	}
	return out, nil
}

// OutboxDelete implements storage.Outbox.
func (b *Backend) OutboxDelete(ctx context.Context, stream string, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := b.outbox().DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}, {Key: "st", Value: stream}})
	if err != nil {
		return fmt.Errorf("mongo: outbox delete in %q: %w", stream, err)
	}
	return nil
}

// OutboxPurge implements storage.Outbox.
func (b *Backend) OutboxPurge(ctx context.Context, stream string) error {
	if _, err := b.outbox().DeleteMany(ctx, bson.D{{Key: "st", Value: stream}}); err != nil {
		return fmt.Errorf("mongo: outbox purge %q: %w", stream, err)
	}
	return nil
}
