package mongo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/anodyne-fhir/anodyne/storage"
)

// kvStore is the KV view of a Backend. Expiry is the x field (absent: no
// expiry); every read checks it, whether or not a TTL index removes
// expired documents in the background.
type kvStore struct{ b *Backend }

// KV returns the keyed store with expiry.
func (b *Backend) KV() storage.KV { return kvStore{b} }

type kvDoc struct {
	Key     string     `bson:"_id"`
	Value   []byte     `bson:"v"`
	Expires *time.Time `bson:"x,omitempty"`
	// Gen changes with every write of the record; conditional changes
	// lock it (kvcas.go).
	Gen string `bson:"g,omitempty"`
}

func (d *kvDoc) live(now time.Time) bool { return d.Expires == nil || d.Expires.After(now) }

func newKVDoc(key string, value []byte, ttl time.Duration, now time.Time) kvDoc {
	d := kvDoc{Key: key, Value: value, Gen: newGen()}
	if d.Value == nil {
		d.Value = []byte{}
	}
	if ttl > 0 {
		x := now.Add(ttl)
		d.Expires = &x
	}
	return d
}

func (s kvStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) (rerr error) {
	defer classify(&rerr)
	d := newKVDoc(key, value, ttl, time.Now())
	if _, err := s.b.kv.ReplaceOne(ctx, bson.D{{Key: "_id", Value: key}}, d, options.Replace().SetUpsert(true)); err != nil {
		return fmt.Errorf("mongo: kv put %q: %w", key, err)
	}
	return nil
}

// PutIfAbsent inserts, or replaces a record that has expired; the unique
// _id and the conditional replace make one caller the winner.
func (s kvStore) PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (_ bool, rerr error) {
	defer classify(&rerr)
	now := time.Now()
	d := newKVDoc(key, value, ttl, now)
	_, err := s.b.kv.InsertOne(ctx, d)
	if err == nil {
		return true, nil
	}
	if !mongo.IsDuplicateKeyError(err) {
		return false, fmt.Errorf("mongo: kv put-if-absent %q: %w", key, err)
	}
	// Remove an expired record, then race for the insert again: the unique
	// _id makes exactly one inserter win. The removal locks the record's
	// generation, so that it cannot remove a record that a concurrent
	// CompareAndSwap has just renewed (FerretDB's conditional delete is a
	// find followed by a delete by _id).
	removed, err := s.removeExpired(ctx, key, now)
	if err != nil {
		return false, fmt.Errorf("mongo: kv put-if-absent %q: %w", key, err)
	}
	if !removed {
		return false, nil
	}
	if _, err := s.b.kv.InsertOne(ctx, d); err != nil {
		if mongo.IsDuplicateKeyError(err) {
			return false, nil
		}
		return false, fmt.Errorf("mongo: kv put-if-absent %q: %w", key, err)
	}
	return true, nil
}

func (s kvStore) Get(ctx context.Context, key string) (_ []byte, rerr error) {
	defer classify(&rerr)
	var d kvDoc
	err := s.b.kv.FindOne(ctx, bson.D{{Key: "_id", Value: key}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, fmt.Errorf("mongo: kv get %q: %w", key, storage.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("mongo: kv get %q: %w", key, err)
	}
	now := time.Now()
	if !d.live(now) {
		// The record is absent to the caller whatever happens here; the
		// removal only reclaims space, so its failure is logged.
		if _, err := s.removeExpired(ctx, key, now); err != nil {
			s.b.log.DebugContext(ctx, "kv: remove expired record", "key", key, "err", err)
		}
		return nil, fmt.Errorf("mongo: kv get %q: expired: %w", key, storage.ErrNotFound)
	}
	return d.Value, nil
}

// Take reads, then deletes; only the caller whose delete removed the
// document gets the value (findOneAndDelete is not atomic on FerretDB).
func (s kvStore) Take(ctx context.Context, key string) (_ []byte, rerr error) {
	defer classify(&rerr)
	var d kvDoc
	err := s.b.kv.FindOne(ctx, bson.D{{Key: "_id", Value: key}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, fmt.Errorf("mongo: kv take %q: %w", key, storage.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("mongo: kv take %q: %w", key, err)
	}
	r, err := s.b.kv.DeleteOne(ctx, bson.D{{Key: "_id", Value: key}})
	if err != nil {
		return nil, fmt.Errorf("mongo: kv take %q: %w", key, err)
	}
	if r.DeletedCount != 1 {
		return nil, fmt.Errorf("mongo: kv take %q: taken concurrently: %w", key, storage.ErrNotFound)
	}
	if !d.live(time.Now()) {
		return nil, fmt.Errorf("mongo: kv take %q: expired: %w", key, storage.ErrNotFound)
	}
	return d.Value, nil
}

func (s kvStore) Delete(ctx context.Context, key string) (rerr error) {
	defer classify(&rerr)
	if _, err := s.b.kv.DeleteOne(ctx, bson.D{{Key: "_id", Value: key}}); err != nil {
		return fmt.Errorf("mongo: kv delete %q: %w", key, err)
	}
	return nil
}

// List scans _id from prefix upwards and stops at the first key without
// it, which needs no regular expression and uses the _id index.
func (s kvStore) List(ctx context.Context, prefix string) (_ []string, rerr error) {
	defer classify(&rerr)
	cur, err := s.b.kv.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$gte", Value: prefix}}}},
		options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetProjection(bson.D{{Key: "_id", Value: 1}, {Key: "x", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("mongo: kv list %q: %w", prefix, err)
	}
	defer cur.Close(ctx)
	now := time.Now()
	keys := []string{}
	for cur.Next(ctx) {
		var d kvDoc
		if err := cur.Decode(&d); err != nil {
			return nil, fmt.Errorf("mongo: kv list %q: %w", prefix, err)
		}
		if !strings.HasPrefix(d.Key, prefix) {
			break
		}
		if d.live(now) {
			keys = append(keys, d.Key)
		}
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("mongo: kv list %q: %w", prefix, err)
	}
	return keys, nil
}
