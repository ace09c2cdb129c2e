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

// kvLockStaleAge: a KV generation lock is held for one read-compare-
// replace, milliseconds even on a loaded FerretDB; ten seconds is far
// beyond any live holder and well under the lease TTLs built on it.
const kvLockStaleAge = 10 * time.Second

// Commit stores writes: in one transaction where the deployment has them,
// otherwise through a commit record (see the package doc).
func (b *Backend) Commit(ctx context.Context, writes ...storage.Write) (_ []storage.Record, rerr error) {
	return b.CommitWithKV(ctx, nil, writes...)
}

// CommitWithKV implements storage.KVCommitter: the puts are stored in the
// writes' transaction, or, without transactions, listed in the commit
// record and stored when it is applied, so that a crash after the commit
// point stores them at recovery and one before it stores neither them nor
// the writes. Without transactions a reader of the KV may see the writes
// a moment before the puts (between the commit point and the apply); a
// recovery rolling a commit forward re-stores its puts even over a later
// Put of the same key, which is why they suit checkpoints written by the
// committer alone.
func (b *Backend) CommitWithKV(ctx context.Context, puts []storage.KVPut, writes ...storage.Write) (_ []storage.Record, rerr error) {
	defer classify(&rerr)
	if len(writes) == 0 && len(puts) == 0 {
		return nil, nil
	}
	for i := range writes {
		if err := validateWrite(&writes[i]); err != nil {
			return nil, err
		}
	}
	if err := storage.CheckEvents(writes); err != nil {
		return nil, fmt.Errorf("mongo: commit: %w", err)
	}
	for _, p := range puts {
		if p.Key == "" {
			return nil, errors.New("mongo: commit: kv put without a key")
		}
	}
	if !b.transactions {
		// Events and KV puts exist exactly when their write does only
		// through a commit record (see outbox.go, atomic.go).
		if len(writes) > 1 || hasEvents(writes) || len(puts) > 0 {
			return b.commitRecord(ctx, writes, puts)
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
		var first int64
		var err error
		if len(writes) > 0 {
			if first, err = b.nextSeq(tctx, int64(len(writes))); err != nil {
				return nil, err
			}
		}
		recs := make([]storage.Record, len(writes))
		for i := range writes {
			if recs[i], err = b.apply(tctx, &writes[i], first+int64(i), true); err != nil {
				return nil, err
			}
		}
		now := time.Now()
		for _, p := range puts {
			d := newKVDoc(p.Key, p.Value, p.TTL, now)
			if _, err := b.kv.ReplaceOne(tctx, bson.D{{Key: "_id", Value: p.Key}}, d, options.Replace().SetUpsert(true)); err != nil {
				return nil, fmt.Errorf("mongo: commit: kv put %q: %w", p.Key, err)
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
	var err error
	for range 5 {
		err = b.counters.FindOneAndUpdate(ctx,
			bson.D{{Key: "_id", Value: "seq"}},
			bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: n}}}},
			options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After),
		).Decode(&c)
		// Two first upserts race to insert the counter; the loser retries.
		if !mongo.IsDuplicateKeyError(err) {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("mongo: next seq: %w", err)
	}
	return c.N - n + 1, nil
}

// apply performs one write. In a transaction (inTxn) seq is given and any
// error aborts everything. Outside one, the history document is inserted
// first: its unique _id "Type/id/version" is the lock that lets exactly one
// of several racing writers of the same version proceed (FerretDB's
// findAndModify is not atomic against concurrent writers), and the unique
// index on s catches two writers that drew the same Seq. A failed write
// removes what it inserted.
func (b *Backend) apply(ctx context.Context, w *storage.Write, seq int64, inTxn bool) (storage.Record, error) {
	key := resourceKey(w.Type, w.ID)
	rec := w.Record
	if rec.Deleted {
		rec.JSON = nil
	}
	claim := w.Claim
	if rec.Deleted {
		claim = ""
	}
	acquired := false
	if claim != "" {
		var err error
		if acquired, err = b.acquireClaim(ctx, claim, key, ""); err != nil {
			return storage.Record{}, err
		}
	}
	undo := func(histID string) {
		if inTxn {
			return // the aborted transaction removes everything
		}
		bg := context.WithoutCancel(ctx)
		if histID != "" {
			if _, err := b.hist.DeleteOne(bg, bson.D{{Key: "_id", Value: histID}, {Key: "s", Value: rec.Seq}}); err != nil {
				b.log.WarnContext(ctx, "remove history of failed write", "id", histID, "err", err)
			}
		}
		if acquired {
			if _, err := b.claims.DeleteOne(bg, bson.D{{Key: "_id", Value: claim}, {Key: "r", Value: key}}); err != nil {
				b.log.WarnContext(ctx, "release claim after failed write", "claim", claim, "err", err)
			}
		}
	}

	h := historyDoc{
		ID: historyKey(rec.Type, rec.ID, rec.VersionID), Type: rec.Type, LID: rec.ID, Version: rec.VersionID,
		Updated: rec.LastUpdated, Nanos: rec.LastUpdated.UnixNano(), Deleted: rec.Deleted,
		Method: rec.Method, JSON: rec.JSON, Wall: time.Now(), Own: ownEntriesOf(w.Index),
	}
	if rec.Deleted {
		own, err := b.versionEntries(ctx, rec.Type, rec.ID, w.ExpectVersion)
		if err != nil {
			undo("")
			return storage.Record{}, err
		}
		h.Own = own
	}
	if err := b.insertHistory(ctx, &h, seq, inTxn, w.ExpectVersion); err != nil {
		undo("")
		return storage.Record{}, err
	}
	rec.Seq = h.Seq
	if inTxn {
		if err := b.insertEvents(ctx, outboxDocs(w.Events, rec.Seq, "")); err != nil {
			return storage.Record{}, err
		}
	}

	entries := w.Index
	if rec.Deleted {
		entries = nil
	}
	doc := resourceDoc{
		ID: key, Type: rec.Type, LID: rec.ID, Version: rec.VersionID,
		Updated: rec.LastUpdated, Nanos: rec.LastUpdated.UnixNano(), Deleted: rec.Deleted,
		Method: rec.Method, JSON: rec.JSON, Seq: rec.Seq, Claim: claim,
		Keys: keysOf(entries), Entries: toEntryDocs(entries), Order: orderOf(entries), PK: b.partitionKey(rec.Type, rec.ID, entries),
	}
	if doc.Keys == nil {
		doc.Keys = []string{}
	}
	oldClaim := ""
	if w.ExpectVersion == 0 {
		if _, err := b.res.InsertOne(ctx, doc); err != nil {
			undo(h.ID)
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
			bson.D{{Key: "_id", Value: key}, {Key: "v", Value: w.ExpectVersion}, {Key: "pc", Value: bson.D{{Key: "$exists", Value: false}}}}, doc,
			// No projection: FerretDB does not implement one on findAndModify.
			options.FindOneAndReplace().SetReturnDocument(options.Before),
		).Decode(&old)
		if err != nil {
			undo(h.ID)
			if errors.Is(err, mongo.ErrNoDocuments) {
				return storage.Record{}, fmt.Errorf("mongo: update %s from version %d: %w", key, w.ExpectVersion, storage.ErrVersionConflict)
			}
			return storage.Record{}, fmt.Errorf("mongo: update %s: %w", key, err)
		}
		oldClaim = old.Claim
	}
	if oldClaim != "" && oldClaim != claim {
		if _, err := b.claims.DeleteOne(ctx, bson.D{{Key: "_id", Value: oldClaim}, {Key: "r", Value: key}}); err != nil {
			return storage.Record{}, fmt.Errorf("mongo: release claim of %s: %w", key, err)
		}
	}
	return rec, nil
}

// insertHistory inserts h with a Seq (seq when given by a transaction,
// else drawn from the counter, again on a collision). A duplicate _id is a
// version conflict, unless it is the leftover of a writer that died before
// updating the resource, which it removes once it is old enough.
func (b *Backend) insertHistory(ctx context.Context, h *historyDoc, seq int64, inTxn bool, expect int64) error {
	for attempt := 0; ; attempt++ {
		if !inTxn {
			s, err := b.nextSeq(ctx, 1)
			if err != nil {
				return err
			}
			seq = s
		}
		h.Seq = seq
		_, err := b.hist.InsertOne(ctx, h)
		if err == nil {
			return nil
		}
		if inTxn && mongo.IsDuplicateKeyError(err) {
			// Seq comes from the transaction's counter, so only the
			// version can collide.
			return fmt.Errorf("mongo: %s already written: %w", h.ID, storage.ErrVersionConflict)
		}
		if !mongo.IsDuplicateKeyError(err) || inTxn || attempt >= 10 {
			return fmt.Errorf("mongo: history of %s: %w", h.ID, err)
		}
		var other historyDoc
		err = b.hist.FindOne(ctx, bson.D{{Key: "_id", Value: h.ID}}).Decode(&other)
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue // a Seq collision: draw another
		}
		if err != nil {
			return fmt.Errorf("mongo: history of %s: %w", h.ID, err)
		}
		if waited, err := b.waitReindexLock(ctx, &other); err != nil {
			return err
		} else if waited {
			attempt-- // a Reindex held the version for a moment: not a failed attempt
			continue
		}
		if !b.orphan(ctx, &other, expect) {
			return fmt.Errorf("mongo: %s already written: %w", h.ID, storage.ErrVersionConflict)
		}
		if _, err := b.hist.DeleteOne(ctx, bson.D{{Key: "_id", Value: other.ID}, {Key: "s", Value: other.Seq}}); err != nil {
			return fmt.Errorf("mongo: remove orphan history %s: %w", other.ID, err)
		}
		b.log.InfoContext(ctx, "removed history of an interrupted write", "id", other.ID)
	}
}

// orphan reports whether a history document was left by a writer that
// never updated the resource: the resource is still at the previous
// version and the document is older than any write in flight.
func (b *Backend) orphan(ctx context.Context, h *historyDoc, expect int64) bool {
	if time.Since(h.Wall) < b.staleAfter {
		return false
	}
	if h.Pending != "" {
		// Part of a commit record: recovery decides, never this writer.
		if err := b.recover(ctx); err != nil {
			b.log.WarnContext(ctx, "recover commits", "err", err)
		}
		return false
	}
	var cur struct {
		V int64 `bson:"v"`
	}
	err := b.res.FindOne(ctx, bson.D{{Key: "_id", Value: resourceKey(h.Type, h.LID)}}).Decode(&cur)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return expect == 0
	case err != nil:
		return false
	}
	return cur.V == expect && cur.V == h.Version-1
}

// acquireClaim makes key the holder of claim. It reports whether it
// created or took the claim (false: key already held it). It reads before
// inserting because a duplicate-key error would abort a transaction.
//
// commit, when set, marks the claim as taken by a pending commit record,
// so that aborting the commit can release it.
func (b *Backend) acquireClaim(ctx context.Context, claim, key, commit string) (bool, error) {
	now := time.Now()
	var held struct {
		Holder string    `bson:"r"`
		At     time.Time `bson:"at"`
		Commit string    `bson:"cm"`
	}
	doc := bson.D{{Key: "_id", Value: claim}, {Key: "r", Value: key}, {Key: "at", Value: now}}
	if commit != "" {
		doc = append(doc, bson.E{Key: "cm", Value: commit})
	}
	err := b.claims.FindOne(ctx, bson.D{{Key: "_id", Value: claim}}).Decode(&held)
	if errors.Is(err, mongo.ErrNoDocuments) {
		_, err := b.claims.InsertOne(ctx, doc)
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
	if held.Commit != "" {
		// Taken by a commit in progress; recovery releases it if it died.
		return false, fmt.Errorf("mongo: claim %q held by a pending commit: %w", claim, storage.ErrDuplicateClaim)
	}
	// The holder may have been deleted or changed its claim without the
	// release reaching the database (a crash between two writes).
	n, err := b.res.CountDocuments(ctx, bson.D{{Key: "_id", Value: held.Holder}, {Key: "c", Value: claim}, {Key: "d", Value: false}})
	if err != nil {
		return false, fmt.Errorf("mongo: check holder of claim %q: %w", claim, err)
	}
	if n > 0 || (!b.transactions && now.Sub(held.At) < b.staleAfter) {
		return false, fmt.Errorf("mongo: claim %q held by %s: %w", claim, held.Holder, storage.ErrDuplicateClaim)
	}
	ur, err := b.claims.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: claim}, {Key: "r", Value: held.Holder}},
		bson.D{{Key: "$set", Value: doc[1:]}})
	if err != nil {
		return false, fmt.Errorf("mongo: take over stale claim %q: %w", claim, err)
	}
	if ur.MatchedCount == 0 {
		return false, fmt.Errorf("mongo: claim %q changed hands: %w", claim, storage.ErrDuplicateClaim)
	}
	b.log.InfoContext(ctx, "took over stale claim", "claim", claim, "from", held.Holder, "to", key)
	return true, nil
}

// versionEntries reads the own entries of one stored version, for the
// delete that follows it. A version that is not there (the delete will
// fail its compare-and-set) or that kept none gives none.
func (b *Backend) versionEntries(ctx context.Context, typ, id string, version int64) (ownEntries, error) {
	if version <= 0 {
		return ownEntries{}, nil
	}
	var d historyDoc
	err := b.hist.FindOne(ctx, bson.D{{Key: "_id", Value: historyKey(typ, id, version)}},
		options.FindOne().SetProjection(bson.D{{Key: "k", Value: 1}, {Key: "e", Value: 1}, {Key: "ek", Value: 1}})).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return ownEntries{}, nil
	}
	if err != nil {
		return ownEntries{}, fmt.Errorf("mongo: entries of %s/%s version %d: %w", typ, id, version, err)
	}
	return d.Own, nil
}
