package mongo

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/anodyne-fhir/anodyne/storage"
)

// SweepExpired implements storage.ExpirySweeper. With a TTL index the
// server removes expired records itself and this does nothing; without
// one (FerretDB) it removes up to limit expired records, each under its
// generation lock (removeExpired), so that a record replaced meanwhile is
// left alone, and the break markers of stale generation locks that are
// older than twice staleAfter (their lock is long gone).
func (b *Backend) SweepExpired(ctx context.Context, limit int) (int, error) {
	if b.ttl || limit <= 0 {
		return 0, nil
	}
	now := time.Now()
	cur, err := b.kv.Find(ctx, bson.D{{Key: "x", Value: bson.D{{Key: "$lte", Value: now}}}},
		options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}).SetLimit(int64(limit)))
	if err != nil {
		return 0, fmt.Errorf("mongo: kv sweep: %w", err)
	}
	var ids []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &ids); err != nil {
		return 0, fmt.Errorf("mongo: kv sweep: %w", err)
	}
	kv := kvStore{b}
	removed := 0
	for _, d := range ids {
		ok, err := kv.removeExpired(ctx, d.ID, now)
		if err != nil {
			return removed, fmt.Errorf("mongo: kv sweep %q: %w", d.ID, err)
		}
		if ok {
			removed++
		}
	}
	// Break markers: _id key␀gen␀broken␀nonce, t when inserted.
	if _, err := b.kvLocks.DeleteMany(ctx, bson.D{
		{Key: "_id", Value: bson.D{{Key: "$regex", Value: `\x00broken\x00`}}},
		{Key: "t", Value: bson.D{{Key: "$lt", Value: now.Add(-2 * b.staleAfter)}}},
	}); err != nil {
		return removed, fmt.Errorf("mongo: kv sweep of lock markers: %w", err)
	}
	return removed, nil
}

var _ storage.ExpirySweeper = (*Backend)(nil)
