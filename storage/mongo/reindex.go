package mongo

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/anodyne-fhir/anodyne/storage"
)

var _ storage.Reindexer = (*Backend)(nil)

// reindexPrefix starts the id of the commit record that a Reindex on
// FerretDB holds while it rewrites a resource's entries.
const reindexPrefix = "r"

// Bounds on waiting for a lock held by another writer: a Reindex lock is
// held for three round trips, a commit record for a few more.
const (
	lockPoll  = 5 * time.Millisecond
	lockWaits = 400
)

// Reindex implements storage.Reindexer: it replaces the e and k fields of
// the current resource document when it is still version and not deleted.
//
// On MongoDB that is one conditional update, atomic per document whatever
// the deployment. FerretDB applies an update as a read followed by a
// write of the whole document, so a Commit of version+1 landing between
// the two would be overwritten by the old version with the new entries.
// There Reindex first takes the lock every writer of version+1 takes, the
// history _id "Type/id/version+1" (see apply and lockAll), as a history
// document marked pending under a commit record of its own: readers never
// see it, writers of that version wait for it to go, and recovery removes
// it if this process dies while holding it.
func (b *Backend) Reindex(ctx context.Context, typ, id string, version int64, index []storage.Entry) error {
	if typ == "" || id == "" {
		return fmt.Errorf("mongo: reindex %q/%q: type and id are required", typ, id)
	}
	key := resourceKey(typ, id)
	fields := bson.D{{Key: "e", Value: toEntryDocs(index)}, {Key: "k", Value: nonNil(keysOf(index))}, {Key: "o", Value: orderOf(index)}}
	if b.part != nil {
		// New entries may move the resource to another patient's partition.
		fields = append(fields, bson.E{Key: "pk", Value: b.partitionKey(typ, id, index)})
	}
	set := bson.D{{Key: "$set", Value: fields}}
	filter := bson.D{{Key: "_id", Value: key}, {Key: "v", Value: version}, {Key: "d", Value: false}, {Key: "pc", Value: bson.D{{Key: "$exists", Value: false}}}}
	if b.name == "ferretdb" {
		release, err := b.lockNext(ctx, typ, id, version)
		if err != nil {
			return err
		}
		defer release()
	}
	for range lockWaits {
		r, err := b.res.UpdateOne(ctx, filter, set)
		if err != nil {
			return fmt.Errorf("mongo: reindex %s: %w", key, err)
		}
		if r.MatchedCount == 1 {
			// The version's own entries (filtered history) follow. Not in
			// the same write: a failure here returns an error, and the
			// caller's retry finds the resource still at version.
			own := ownEntriesOf(index)
			if _, err := b.hist.UpdateOne(ctx, bson.D{{Key: "_id", Value: historyKey(typ, id, version)}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "e", Value: own.Entries}, {Key: "k", Value: nonNil(own.Keys)}, {Key: "ek", Value: true}}}}); err != nil {
				return fmt.Errorf("mongo: reindex %s: history entries: %w", key, err)
			}
			return nil
		}
		if err := b.checkReindexable(ctx, key, version); err != nil {
			return err
		}
		if err := sleep(ctx, lockPoll); err != nil {
			return fmt.Errorf("mongo: reindex %s: %w", key, err)
		}
	}
	return fmt.Errorf("mongo: reindex %s: a writer in flight kept the resource at version %d", key, version)
}

// checkReindexable explains why the conditional update or the lock of key
// failed: an error for an absent, deleted or newer resource, nil when it
// is still at version (a writer in flight: worth waiting for).
func (b *Backend) checkReindexable(ctx context.Context, key string, version int64) error {
	var d resourceDoc
	err := b.res.FindOne(ctx, bson.D{{Key: "_id", Value: key}}).Decode(&d)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return fmt.Errorf("mongo: reindex %s: %w", key, storage.ErrNotFound)
	case err != nil:
		return fmt.Errorf("mongo: reindex %s: %w", key, err)
	case d.Placeholder:
		return fmt.Errorf("mongo: reindex %s: being created: %w", key, storage.ErrNotFound)
	case d.Version != version:
		return fmt.Errorf("mongo: reindex %s: version %d is not the current %d: %w", key, version, d.Version, storage.ErrVersionConflict)
	case d.Deleted:
		return fmt.Errorf("mongo: reindex %s: deleted: %w", key, storage.ErrNotFound)
	}
	// Still the current version: locked by a commit record, or a writer
	// of version+1 holds the history lock and has not replaced it yet.
	return nil
}

// lockNext takes the history _id of version+1 for a Reindex and returns
// its release. It fails like Reindex when the resource is no longer at
// version, and waits while another writer of version+1 is in flight.
func (b *Backend) lockNext(ctx context.Context, typ, id string, version int64) (func(), error) {
	key := resourceKey(typ, id)
	for range lockWaits {
		seq, err := b.nextSeq(ctx, 1)
		if err != nil {
			return nil, err
		}
		now := time.Now()
		rid := reindexPrefix + strconv.FormatInt(seq, 10)
		h := historyDoc{ID: historyKey(typ, id, version+1), Type: typ, LID: id, Version: version + 1,
			Updated: now, Nanos: now.UnixNano(), Deleted: true, Seq: seq, Wall: now, Pending: rid}
		// The record comes first, so that recovery can always find and
		// remove the lock (abort deletes the history document it lists).
		rec := commitDoc{ID: rid, State: stPrepared, At: now, Writes: []commitWrite{{Key: key, Expect: version, Hist: h}}}
		if _, err := b.commits().InsertOne(ctx, rec); err != nil {
			return nil, fmt.Errorf("mongo: reindex %s: write lock record: %w", key, err)
		}
		release := func() {
			bg := context.WithoutCancel(ctx)
			if err := b.abort(bg, &rec); err != nil {
				b.log.WarnContext(ctx, "release reindex lock", "id", rid, "err", err)
			}
		}
		_, err = b.hist.InsertOne(ctx, h)
		if err == nil {
			return release, nil
		}
		release()
		if !mongo.IsDuplicateKeyError(err) {
			return nil, fmt.Errorf("mongo: reindex %s: lock: %w", key, err)
		}
		// Either a Seq collision or a writer of version+1 holds the lock;
		// the resource tells whether that writer has already finished.
		if err := b.checkReindexable(ctx, key, version); err != nil {
			return nil, err
		}
		if err := sleep(ctx, lockPoll); err != nil {
			return nil, fmt.Errorf("mongo: reindex %s: %w", key, err)
		}
	}
	return nil, fmt.Errorf("mongo: reindex %s: version %d+1 stayed locked: %w", key, version, storage.ErrVersionConflict)
}

// waitReindexLock reports whether the history document other is the
// lock of a Reindex in progress, after waiting (bounded) for it to go; the
// writer that met it then tries again instead of reporting a conflict
// that no newer version caused.
func (b *Backend) waitReindexLock(ctx context.Context, other *historyDoc) (bool, error) {
	if !strings.HasPrefix(other.Pending, reindexPrefix) {
		return false, nil
	}
	for range lockWaits {
		n, err := b.hist.CountDocuments(ctx, bson.D{{Key: "_id", Value: other.ID}, {Key: "pc", Value: other.Pending}})
		if err != nil {
			return false, fmt.Errorf("mongo: wait for reindex lock %s: %w", other.ID, err)
		}
		if n == 0 {
			return true, nil
		}
		if time.Since(other.Wall) >= b.staleAfter {
			if err := b.recover(ctx); err != nil {
				return false, err
			}
		}
		if err := sleep(ctx, lockPoll); err != nil {
			return false, fmt.Errorf("mongo: wait for reindex lock %s: %w", other.ID, err)
		}
	}
	return false, nil
}
