package mongo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/anodyne-fhir/anodyne/storage"
)

// staleClaimAge is how old a claim whose holder does not carry it must be
// before another writer may take it over. Without transactions a claim is
// written just before its resource, so a younger claim may belong to a
// write still in flight; an older one was left by a crash or a failed write.
const staleClaimAge = time.Minute

// Commit stores writes: in one transaction where the deployment has them,
// otherwise only a single write (see the package doc).
func (b *Backend) Commit(ctx context.Context, writes ...storage.Write) ([]storage.Record, error) {
	if len(writes) == 0 {
		return nil, nil
	}
	seen := make(map[string]bool, len(writes))
	for i := range writes {
		if err := validateWrite(&writes[i]); err != nil {
			return nil, err
		}
		key := resourceKey(writes[i].Type, writes[i].ID)
		if seen[key] {
			return nil, fmt.Errorf("mongo: commit: %s written twice in one commit", key)
		}
		seen[key] = true
	}
	if !b.transactions {
		if len(writes) > 1 {
			return nil, fmt.Errorf("mongo: commit of %d writes without transactions: %w", len(writes), storage.ErrUnsupported)
		}
		rec, err := b.apply(ctx, &writes[0], 0, false)
		if err != nil {
			return nil, err
		}
		return []storage.Record{rec}, nil
	}
	sess, err := b.client.StartSession()
	if err != nil {
		return nil, fmt.Errorf("mongo: commit: start session: %w", err)
	}
	defer sess.EndSession(context.WithoutCancel(ctx))
	out, err := sess.WithTransaction(ctx, func(tctx context.Context) (any, error) {
		first, err := b.nextSeq(tctx, int64(len(writes)))
		if err != nil {
			return nil, err
		}
		recs := make([]storage.Record, len(writes))
		for i := range writes {
			if recs[i], err = b.apply(tctx, &writes[i], first+int64(i), true); err != nil {
				return nil, err
			}
		}
		return recs, nil
	})
	if err != nil {
		return nil, err
	}
	return out.([]storage.Record), nil
}

func validateWrite(w *storage.Write) error {
	switch {
	case w.Type == "" || w.ID == "":
		return fmt.Errorf("mongo: commit: write without type or id (%q/%q)", w.Type, w.ID)
	case w.ExpectVersion < 0 || w.VersionID != w.ExpectVersion+1:
		return fmt.Errorf("mongo: commit %s/%s: version %d does not follow expected %d", w.Type, w.ID, w.VersionID, w.ExpectVersion)
	}
	return nil
}

// nextSeq reserves n consecutive sequence numbers and returns the first.
func (b *Backend) nextSeq(ctx context.Context, n int64) (int64, error) {
	var c struct {
		N int64 `bson:"n"`
	}
	err := b.counters.FindOneAndUpdate(ctx,
		bson.D{{Key: "_id", Value: "seq"}},
		bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: n}}}},
		options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After),
	).Decode(&c)
	if err != nil {
		return 0, fmt.Errorf("mongo: next seq: %w", err)
	}
	return c.N - n + 1, nil
}

// apply performs one write. In a transaction (inTxn) seq is given and any
// error aborts everything; outside one, apply reserves its own seq and
// undoes its claim when the compare-and-set fails.
func (b *Backend) apply(ctx context.Context, w *storage.Write, seq int64, inTxn bool) (storage.Record, error) {
	key := resourceKey(w.Type, w.ID)
	rec := w.Record
	if rec.Deleted {
		rec.JSON = nil
	}
	if !inTxn {
		s, err := b.nextSeq(ctx, 1)
		if err != nil {
			return storage.Record{}, err
		}
		seq = s
	}
	rec.Seq = seq
	claim := w.Claim
	if rec.Deleted {
		claim = ""
	}
	acquired := false
	if claim != "" {
		var err error
		if acquired, err = b.acquireClaim(ctx, claim, key); err != nil {
			return storage.Record{}, err
		}
	}
	releaseNew := func() {
		if acquired && !inTxn {
			// A failed write must not keep the claim it took.
			if _, err := b.claims.DeleteOne(context.WithoutCancel(ctx), bson.D{{Key: "_id", Value: claim}, {Key: "r", Value: key}}); err != nil {
				b.log.WarnContext(ctx, "release claim after failed write", "claim", claim, "err", err)
			}
		}
	}

	entries := w.Index
	if rec.Deleted {
		entries = nil
	}
	doc := resourceDoc{
		ID: key, Type: rec.Type, LID: rec.ID, Version: rec.VersionID,
		Updated: rec.LastUpdated, Nanos: rec.LastUpdated.UnixNano(), Deleted: rec.Deleted,
		Method: rec.Method, JSON: rec.JSON, Seq: seq, Claim: claim,
		Keys: keysOf(entries), Entries: toEntryDocs(entries),
	}
	if doc.Keys == nil {
		doc.Keys = []string{}
	}
	oldClaim := ""
	if w.ExpectVersion == 0 {
		if _, err := b.res.InsertOne(ctx, doc); err != nil {
			releaseNew()
			if mongo.IsDuplicateKeyError(err) {
				return storage.Record{}, fmt.Errorf("mongo: create %s: %w", key, storage.ErrVersionConflict)
			}
			return storage.Record{}, fmt.Errorf("mongo: create %s: %w", key, err)
		}
	} else {
		var old struct {
			Claim string `bson:"c"`
		}
		err := b.res.FindOneAndReplace(ctx,
			bson.D{{Key: "_id", Value: key}, {Key: "v", Value: w.ExpectVersion}}, doc,
			options.FindOneAndReplace().SetProjection(bson.D{{Key: "c", Value: 1}}).SetReturnDocument(options.Before),
		).Decode(&old)
		if err != nil {
			releaseNew()
			if errors.Is(err, mongo.ErrNoDocuments) {
				return storage.Record{}, fmt.Errorf("mongo: update %s from version %d: %w", key, w.ExpectVersion, storage.ErrVersionConflict)
			}
			return storage.Record{}, fmt.Errorf("mongo: update %s: %w", key, err)
		}
		oldClaim = old.Claim
	}
	h := historyDoc{
		ID: historyKey(rec.Type, rec.ID, rec.VersionID), Type: rec.Type, LID: rec.ID, Version: rec.VersionID,
		Updated: rec.LastUpdated, Nanos: rec.LastUpdated.UnixNano(), Deleted: rec.Deleted,
		Method: rec.Method, JSON: rec.JSON, Seq: seq,
	}
	if _, err := b.hist.InsertOne(ctx, h); err != nil {
		return storage.Record{}, fmt.Errorf("mongo: history of %s v%d: %w", key, rec.VersionID, err)
	}
	if oldClaim != "" && oldClaim != claim {
		if _, err := b.claims.DeleteOne(ctx, bson.D{{Key: "_id", Value: oldClaim}, {Key: "r", Value: key}}); err != nil {
			return storage.Record{}, fmt.Errorf("mongo: release claim of %s: %w", key, err)
		}
	}
	return rec, nil
}

// acquireClaim makes key the holder of claim. It reports whether it
// created or took the claim (false: key already held it). It reads before
// inserting because a duplicate-key error would abort a transaction.
func (b *Backend) acquireClaim(ctx context.Context, claim, key string) (bool, error) {
	now := time.Now()
	var held struct {
		Holder string    `bson:"r"`
		At     time.Time `bson:"at"`
	}
	err := b.claims.FindOne(ctx, bson.D{{Key: "_id", Value: claim}}).Decode(&held)
	if errors.Is(err, mongo.ErrNoDocuments) {
		_, err := b.claims.InsertOne(ctx, bson.D{{Key: "_id", Value: claim}, {Key: "r", Value: key}, {Key: "at", Value: now}})
		if mongo.IsDuplicateKeyError(err) {
			return false, fmt.Errorf("mongo: claim %q taken concurrently: %w", claim, storage.ErrDuplicateClaim)
		}
		if err != nil {
			return false, fmt.Errorf("mongo: claim %q: %w", claim, err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("mongo: read claim %q: %w", claim, err)
	}
	if held.Holder == key {
		return false, nil
	}
	// The holder may have been deleted or changed its claim without the
	// release reaching the database (a crash between two writes).
	n, err := b.res.CountDocuments(ctx, bson.D{{Key: "_id", Value: held.Holder}, {Key: "c", Value: claim}, {Key: "d", Value: false}})
	if err != nil {
		return false, fmt.Errorf("mongo: check holder of claim %q: %w", claim, err)
	}
	if n > 0 || (!b.transactions && now.Sub(held.At) < staleClaimAge) {
		return false, fmt.Errorf("mongo: claim %q held by %s: %w", claim, held.Holder, storage.ErrDuplicateClaim)
	}
	ur, err := b.claims.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: claim}, {Key: "r", Value: held.Holder}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "r", Value: key}, {Key: "at", Value: now}}}})
	if err != nil {
		return false, fmt.Errorf("mongo: take over stale claim %q: %w", claim, err)
	}
	if ur.MatchedCount == 0 {
		return false, fmt.Errorf("mongo: claim %q changed hands: %w", claim, storage.ErrDuplicateClaim)
	}
	b.log.InfoContext(ctx, "took over stale claim", "claim", claim, "from", held.Holder, "to", key)
	return true, nil
}
