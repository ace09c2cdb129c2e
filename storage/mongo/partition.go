package mongo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Partitioning and sharding
//
// With WithPartitioning, every resource document carries pk, its
// storage.Partitioning key: "Patient/<id>" for a patient's record,
// "~shared" for the few resources of several patients, "<Type>/<id>" for
// the rest. pk is the shard key of the resources collection, hashed
// ({pk: "hashed"}): a chunk range never splits one key value, so a
// patient's whole record lives on one shard, and hashing spreads patients
// evenly whatever their ids look like. Searches that pin a patient (the
// pain trend "Observation?patient=X&code=…", compartment searches,
// patient/ tokens) add {pk: {$in: ["Patient/X", "~shared"]}}, which mongos
// routes to the shards owning those two values instead of all of them;
// system searches ("Observation?code=…") scatter, as they must. A search
// over several types (the $everything pages) is narrowed only when every
// type is: the Patient type's compartment includes Patients linked to X,
// which live in their own partitions, so those pages scatter today.
// TestShardTargeting simulates a four-shard cluster and checks these
// claims on the filters this package generates.
//
// The history collection is sharded on {_id: 1}: "Type/id/version" keeps
// one resource's versions together for instance history, and its unique
// _id is the cluster-wide lock that makes two racing creates of one
// resource conflict even when they would land on different shards (a
// unique index on resources is enforced per shard only, when pk is the
// shard key). KV, claims, counters and commits are small and stay
// unsharded on the primary shard.
//
// Not verified here (no cluster runs in this environment): an update that
// moves a resource to another patient's partition changes its shard key
// value, which MongoDB allows inside a transaction (every Commit on a
// sharded cluster is one) only with the old key in the filter; the
// conditional replace filters on {_id, v} and will need the old pk added
// if a real cluster refuses it.
//
// The pk filter is only sound when every document has the pk the current
// partitioning gives it, so it is used only when the database's marker
// (counters document "partitioning") holds the fingerprint of the links in
// use: written at Open on an empty database, or by Partition after keying
// older data. A database opened with other links keeps writing pk but
// stops filtering on it, and says so in Capabilities.

// WithPartitioning makes the backend store and use partition keys.
func WithPartitioning(p storage.Partitioning) Option {
	return func(c *config) { c.partitioning = &p }
}

const markerPartitioning = "partitioning"

// fingerprint identifies a partitioning's links, so that data keyed by one
// set of links is never filtered by another.
func fingerprint(p *storage.Partitioning) string {
	types := make([]string, 0, len(p.Links))
	for t := range p.Links {
		types = append(types, t)
	}
	sort.Strings(types)
	var canon [][2]any
	for _, t := range types {
		canon = append(canon, [2]any{t, p.Links[t]})
	}
	b, _ := json.Marshal(canon)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// setupPartitioning decides at Open whether searches may filter on pk.
func (b *Backend) setupPartitioning(ctx context.Context) error {
	var marker struct {
		FP string `bson:"fp"`
	}
	err := b.counters.FindOne(ctx, bson.D{{Key: "_id", Value: markerPartitioning}}).Decode(&marker)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return fmt.Errorf("mongo: read partitioning marker: %w", err)
	}
	if b.part == nil {
		if err == nil {
			// Writes without pk would hide documents from targeted searches
			// of processes that filter on it.
			return errors.New("mongo: open: this database is partitioned; open it with WithPartitioning")
		}
		return nil
	}
	fp := fingerprint(b.part)
	switch {
	case err == nil && marker.FP == fp:
		b.targeting = true
	case err == nil:
		b.notes = append(b.notes, "partition links differ from the ones the data was keyed with: searches scan every partition until `anodyne mongo partition` rekeys it")
	default:
		n, err := b.res.CountDocuments(ctx, bson.D{}, nil)
		if err != nil {
			return fmt.Errorf("mongo: count resources: %w", err)
		}
		if n > 0 {
			b.notes = append(b.notes, "resources written before partitioning have no partition key: searches scan every partition until `anodyne mongo partition` keys them")
			return nil
		}
		if _, err := b.counters.InsertOne(ctx, bson.D{{Key: "_id", Value: markerPartitioning}, {Key: "fp", Value: fp}}); err != nil && !mongo.IsDuplicateKeyError(err) {
			return fmt.Errorf("mongo: write partitioning marker: %w", err)
		}
		b.targeting = true
	}
	return nil
}

// partitionKey is pk of a write; "" without partitioning (omitted).
func (b *Backend) partitionKey(typ, id string, entries []storage.Entry) string {
	if b.part == nil {
		return ""
	}
	return b.part.Key(typ, id, entries)
}

// targetFilter narrows a search to the partitions that can hold its
// matches; nil when it cannot be narrowed.
func (b *Backend) targetFilter(q storage.Query) bson.D {
	if !b.targeting {
		return nil
	}
	t := b.part.Targets(q)
	if t == nil {
		return nil
	}
	return bson.D{{Key: "pk", Value: bson.D{{Key: "$in", Value: t}}}}
}

// Partition keys every resource document with the current
// partitioning, then writes the marker that lets searches filter on pk
// from the next Open on.
// rekey gives the index entries of a stored version (the caller knows how
// to index; this package does not). It is safe to re-run, and writes that
// happen meanwhile carry their pk already.
func (b *Backend) Partition(ctx context.Context, rekey func(storage.Record) ([]storage.Entry, error)) (int64, error) {
	if b.part == nil {
		return 0, errors.New("mongo: partition: the backend was opened without WithPartitioning")
	}
	var n int64
	for _, coll := range []*mongo.Collection{b.res} {
		cur, err := coll.Find(ctx, bson.D{})
		if err != nil {
			return n, fmt.Errorf("mongo: partition: scan %s: %w", coll.Name(), err)
		}
		for cur.Next(ctx) {
			var d struct {
				ID      string `bson:"_id"`
				Type    string `bson:"t"`
				LID     string `bson:"i"`
				Version int64  `bson:"v"`
				Deleted bool   `bson:"d"`
				JSON    []byte `bson:"j"`
				PK      string `bson:"pk"`
			}
			if err := cur.Decode(&d); err != nil {
				cur.Close(ctx)
				return n, fmt.Errorf("mongo: partition: decode: %w", err)
			}
			var entries []storage.Entry
			if !d.Deleted && len(d.JSON) > 0 {
				if entries, err = rekey(storage.Record{Type: d.Type, ID: d.LID, VersionID: d.Version, JSON: d.JSON}); err != nil {
					cur.Close(ctx)
					return n, fmt.Errorf("mongo: partition: index %s: %w", d.ID, err)
				}
			}
			pk := b.part.Key(d.Type, d.LID, entries)
			if pk == d.PK {
				continue
			}
			if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: d.ID}}, bson.D{{Key: "$set", Value: bson.D{{Key: "pk", Value: pk}}}}); err != nil {
				cur.Close(ctx)
				return n, fmt.Errorf("mongo: partition: set pk of %s: %w", d.ID, err)
			}
			n++
		}
		if err := cur.Err(); err != nil {
			cur.Close(ctx)
			return n, fmt.Errorf("mongo: partition: scan %s: %w", coll.Name(), err)
		}
		cur.Close(ctx)
	}
	_, err := b.counters.UpdateOne(ctx, bson.D{{Key: "_id", Value: markerPartitioning}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "fp", Value: fingerprint(b.part)}}}}, options.UpdateOne().SetUpsert(true))
	if err != nil {
		return n, fmt.Errorf("mongo: partition: write marker: %w", err)
	}
	// Searches of this process keep scanning every partition: targeting is
	// decided at Open, so that it never changes under a running search.
	return n, nil
}

// ShardCommands are the admin commands that shard this database as the
// package doc describes, for `anodyne mongo shard-setup` to run against a
// mongos (or print for an operator).
func (b *Backend) ShardCommands() []bson.D {
	db := b.db.Name()
	return []bson.D{
		{{Key: "enableSharding", Value: db}},
		{{Key: "shardCollection", Value: db + "." + colResources}, {Key: "key", Value: bson.D{{Key: "pk", Value: "hashed"}}}},
		{{Key: "shardCollection", Value: db + "." + colHistory}, {Key: "key", Value: bson.D{{Key: "_id", Value: 1}}}},
	}
}

// ApplyShardCommands runs ShardCommands against the admin database of the
// deployment (a mongos), in order, stopping at the first refusal.
func (b *Backend) ApplyShardCommands(ctx context.Context) error {
	admin := b.client.Database("admin")
	for _, c := range b.ShardCommands() {
		if err := admin.RunCommand(ctx, c).Err(); err != nil {
			return fmt.Errorf("mongo: %s: %w", c[0].Key, err)
		}
	}
	return nil
}
