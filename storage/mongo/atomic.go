package mongo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Atomic multi-write commits without transactions, with a durable commit
// record in the commits collection:
//
//  1. prepare: insert the record (state "prep") listing every write with
//     its final history and resource documents;
//  2. lock: insert each history document marked pc=<record> (its unique
//     _id excludes every other writer of that version), mark each resource
//     pc=<record> with a compare-and-set on its version (or insert a
//     deleted placeholder for a create), take the claims marked
//     cm=<record>. Any failure aborts: everything marked is removed;
//  3. commit point: one conditional update of the record to "commit";
//  4. apply: replace each marked resource with its new document, release
//     old claims, unmark history and claims, and set the record "done".
//
// Readers decide by the record: a marked history version is visible only
// when its record is "commit" or "done"; a marked resource reads as its
// new version then and as its old one (absent for a placeholder) before.
// A search takes a snapshot of the records in "commit"/"done" before and
// after its scan and runs again when a commit was decided in between, so
// it never returns a half-applied commit. Recovery (at Open, and when a
// writer meets a stale lock) aborts prepared records and rolls committed
// ones forward once they are older than any commit in flight.

const colCommits = "commits"

// Commit record states.
const (
	stPrepared  = "prep"
	stCommitted = "commit"
	stDone      = "done"
	stAborted   = "abort"
)

type commitDoc struct {
	ID     string        `bson:"_id"`
	State  string        `bson:"st"`
	At     time.Time     `bson:"at"`
	Writes []commitWrite `bson:"w"`
	// KV holds the KV records of a CommitWithKV, stored when the record
	// is applied (rollForward), after the commit point.
	KV []kvDoc `bson:"kv,omitempty"`
}

type commitWrite struct {
	Key    string `bson:"key"`
	Expect int64  `bson:"ex"`
	// First: the first write of this resource in the commit (it locks the
	// resource); Last: the last one (its document becomes current).
	First bool        `bson:"f"`
	Last  bool        `bson:"l"`
	Claim string      `bson:"c,omitempty"`
	Hist  historyDoc  `bson:"h"`
	Res   resourceDoc `bson:"r"`
	// Events are the write's outbox documents, marked pc until applied.
	Events []outboxDoc `bson:"ev,omitempty"`
}

func visible(state string) bool { return state == stCommitted || state == stDone }

// commitRecord commits several writes, and the KV puts, atomically
// without transactions.
func (b *Backend) commitRecord(ctx context.Context, writes []storage.Write, puts []storage.KVPut) ([]storage.Record, error) {
	for attempt := 0; ; attempt++ {
		recs, err := b.tryCommitRecord(ctx, writes, puts)
		var sc seqCollision
		if !errors.As(err, &sc) || attempt >= 10 {
			return recs, err
		}
		// Writers that collided draw again at once and collide again
		// (FerretDB's $inc is not atomic): spread them out.
		select {
		case <-time.After(rand.N(time.Duration(attempt+1) * 2 * time.Millisecond)):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// seqCollision: two writers drew the same Seq (FerretDB's counter update
// is not atomic); the commit is retried with new numbers.
type seqCollision struct{ id string }

func (e seqCollision) Error() string { return "mongo: seq collision on " + e.id }

func (b *Backend) tryCommitRecord(ctx context.Context, writes []storage.Write, puts []storage.KVPut) ([]storage.Record, error) {
	var doc commitDoc
	var recs []storage.Record
	if len(writes) == 0 {
		// KV puts alone: no Seq to name the record after.
		doc = commitDoc{ID: "kv" + newGen(), State: stPrepared, At: time.Now()}
	} else {
		seq0, err := b.nextSeq(ctx, int64(len(writes)))
		if err != nil {
			return nil, err
		}
		deleted, err := b.deletedEntries(ctx, writes)
		if err != nil {
			return nil, err
		}
		if doc, recs, err = b.buildCommit(writes, seq0, deleted); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	for _, p := range puts {
		doc.KV = append(doc.KV, newKVDoc(p.Key, p.Value, p.TTL, now))
	}
	id := doc.ID
	if _, err := b.commits().InsertOne(ctx, doc); err != nil {
		if mongo.IsDuplicateKeyError(err) {
			// Its id is its first Seq: another writer drew the same one.
			return nil, seqCollision{id}
		}
		return nil, fmt.Errorf("mongo: write commit record: %w", err)
	}
	if err := b.lockAll(ctx, &doc); err != nil {
		if aerr := b.abort(context.WithoutCancel(ctx), &doc); aerr != nil {
			b.log.WarnContext(ctx, "abort commit record", "id", id, "err", aerr)
		}
		return nil, err
	}
	r, err := b.commits().UpdateOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "st", Value: stPrepared}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "st", Value: stCommitted}}}})
	if err != nil || r.MatchedCount != 1 {
		// Unknown outcome on an error: recovery settles the record, and
		// the caller must not assume either way.
		if err == nil {
			err = errors.New("record was aborted by recovery")
		}
		return nil, fmt.Errorf("mongo: commit point of %s: %w", id, err)
	}
	if err := b.rollForward(context.WithoutCancel(ctx), &doc); err != nil {
		// Committed: readers already see it and recovery finishes it.
		b.log.WarnContext(ctx, "apply committed record", "id", id, "err", err)
	}
	b.cleanDone(ctx)
	return recs, nil
}

// deletedEntries gives each delete among writes the own entries of the
// version it deletes: an earlier write of the same commit, or the stored one.
func (b *Backend) deletedEntries(ctx context.Context, writes []storage.Write) (map[int]ownEntries, error) {
	out := map[int]ownEntries{}
	latest := map[string]ownEntries{}
	for i := range writes {
		w := &writes[i]
		key := resourceKey(w.Type, w.ID)
		own := ownEntriesOf(w.Index)
		if w.Deleted {
			prev, ok := latest[key]
			if !ok {
				var err error
				if prev, err = b.versionEntries(ctx, w.Type, w.ID, w.ExpectVersion); err != nil {
					return nil, err
				}
			}
			own = prev
			out[i] = own
		}
		latest[key] = own
	}
	return out, nil
}

// buildCommit prepares the record of writes, numbered from seq0; deleted
// holds the entries each delete keeps (see deletedEntries).
func (b *Backend) buildCommit(writes []storage.Write, seq0 int64, deleted map[int]ownEntries) (commitDoc, []storage.Record, error) {
	id := "c" + strconv.FormatInt(seq0, 10)
	now := time.Now()
	doc := commitDoc{ID: id, State: stPrepared, At: now}
	recs := make([]storage.Record, len(writes))
	version := map[string]int64{} // resource key -> version after the writes so far
	last := map[string]int{}
	for i := range writes {
		w := &writes[i]
		key := resourceKey(w.Type, w.ID)
		v, seen := version[key]
		if seen && w.ExpectVersion != v {
			return commitDoc{}, nil, fmt.Errorf("mongo: commit: %s expects version %d after version %d in the same commit: %w", key, w.ExpectVersion, v, storage.ErrVersionConflict)
		}
		version[key] = w.VersionID
		last[key] = i
		rec := w.Record
		rec.Seq = seq0 + int64(i)
		claim, entries := w.Claim, w.Index
		if rec.Deleted {
			rec.JSON, claim, entries = nil, "", nil
		}
		recs[i] = rec
		cw := commitWrite{Key: key, Expect: w.ExpectVersion, First: !seen, Claim: claim,
			Hist: historyDoc{
				ID: historyKey(rec.Type, rec.ID, rec.VersionID), Type: rec.Type, LID: rec.ID, Version: rec.VersionID,
				Updated: rec.LastUpdated, Nanos: rec.LastUpdated.UnixNano(), Deleted: rec.Deleted,
				Method: rec.Method, JSON: rec.JSON, Seq: rec.Seq, Wall: now, Pending: id,
				Own: ownEntriesOf(entries),
			},
			Res: resourceDoc{
				ID: key, Type: rec.Type, LID: rec.ID, Version: rec.VersionID,
				Updated: rec.LastUpdated, Nanos: rec.LastUpdated.UnixNano(), Deleted: rec.Deleted,
				Method: rec.Method, JSON: rec.JSON, Seq: rec.Seq, Claim: claim,
				Keys: keysOf(entries), Entries: toEntryDocs(entries), Order: orderOf(entries), PK: b.partitionKey(rec.Type, rec.ID, entries),
			},
			Events: outboxDocs(w.Events, rec.Seq, id),
		}
		if rec.Deleted {
			cw.Hist.Own = deleted[i]
		}
		if cw.Res.Keys == nil {
			cw.Res.Keys = []string{}
		}
		doc.Writes = append(doc.Writes, cw)
	}
	for _, i := range last {
		doc.Writes[i].Last = true
	}
	return doc, recs, nil
}

func (b *Backend) commits() *mongo.Collection { return b.db.Collection(colCommits) }

// lockAll performs step 2; the first failure is returned for abort.
func (b *Backend) lockAll(ctx context.Context, doc *commitDoc) error {
	for i := range doc.Writes {
		w := &doc.Writes[i]
		for {
			_, err := b.hist.InsertOne(ctx, w.Hist)
			if err == nil {
				break
			}
			if !mongo.IsDuplicateKeyError(err) {
				return fmt.Errorf("mongo: lock %s: %w", w.Hist.ID, err)
			}
			var other historyDoc
			ferr := b.hist.FindOne(ctx, bson.D{{Key: "_id", Value: w.Hist.ID}}).Decode(&other)
			if errors.Is(ferr, mongo.ErrNoDocuments) {
				return seqCollision{w.Hist.ID}
			}
			if ferr == nil {
				if waited, werr := b.waitReindexLock(ctx, &other); werr != nil {
					return werr
				} else if waited {
					continue // a Reindex held the version for a moment
				}
			}
			return fmt.Errorf("mongo: %s already written: %w", w.Hist.ID, storage.ErrVersionConflict)
		}
		if err := b.insertEvents(ctx, w.Events); err != nil {
			return err
		}
	}
	for i := range doc.Writes {
		w := &doc.Writes[i]
		if !w.First {
			continue
		}
		if w.Expect == 0 {
			ph := resourceDoc{ID: w.Key, Type: w.Res.Type, LID: w.Res.LID, Deleted: true, Keys: []string{}, Entries: []entryDoc{}, Pending: doc.ID, Placeholder: true}
			if _, err := b.res.InsertOne(ctx, ph); err != nil {
				if mongo.IsDuplicateKeyError(err) {
					return fmt.Errorf("mongo: create %s: %w", w.Key, storage.ErrVersionConflict)
				}
				return fmt.Errorf("mongo: lock %s: %w", w.Key, err)
			}
			continue
		}
		r, err := b.res.UpdateOne(ctx,
			bson.D{{Key: "_id", Value: w.Key}, {Key: "v", Value: w.Expect}, {Key: "pc", Value: bson.D{{Key: "$exists", Value: false}}}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "pc", Value: doc.ID}}}})
		if err != nil {
			return fmt.Errorf("mongo: lock %s: %w", w.Key, err)
		}
		if r.MatchedCount != 1 {
			return fmt.Errorf("mongo: update %s from version %d: %w", w.Key, w.Expect, storage.ErrVersionConflict)
		}
	}
	for i := range doc.Writes {
		w := &doc.Writes[i]
		if w.Last && w.Claim != "" {
			if _, err := b.acquireClaim(ctx, w.Claim, w.Key, doc.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// abort undoes the locks of a prepared record and removes it. Every step
// addresses documents by _id (pc and cm have no index), and is idempotent.
func (b *Backend) abort(ctx context.Context, doc *commitDoc) error {
	id := doc.ID
	r, err := b.commits().UpdateOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "st", Value: bson.D{{Key: "$in", Value: bson.A{stPrepared, stAborted}}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "st", Value: stAborted}}}})
	if err != nil {
		return fmt.Errorf("mongo: abort %s: %w", id, err)
	}
	if r.MatchedCount == 0 {
		return fmt.Errorf("mongo: abort %s: record is no longer prepared", id)
	}
	for i := range doc.Writes {
		w := &doc.Writes[i]
		if _, err := b.hist.DeleteOne(ctx, bson.D{{Key: "_id", Value: w.Hist.ID}, {Key: "pc", Value: id}}); err != nil {
			return fmt.Errorf("mongo: abort %s: %w", id, err)
		}
		for _, ev := range w.Events {
			if _, err := b.outbox().DeleteOne(ctx, bson.D{{Key: "_id", Value: ev.ID}, {Key: "pc", Value: id}}); err != nil {
				return fmt.Errorf("mongo: abort %s: %w", id, err)
			}
		}
		if w.First {
			if _, err := b.res.DeleteOne(ctx, bson.D{{Key: "_id", Value: w.Key}, {Key: "pc", Value: id}, {Key: "ph", Value: true}}); err != nil {
				return fmt.Errorf("mongo: abort %s: %w", id, err)
			}
			if _, err := b.res.UpdateOne(ctx, bson.D{{Key: "_id", Value: w.Key}, {Key: "pc", Value: id}}, unset("pc")); err != nil {
				return fmt.Errorf("mongo: abort %s: %w", id, err)
			}
		}
		if w.Last && w.Claim != "" {
			if _, err := b.claims.DeleteOne(ctx, bson.D{{Key: "_id", Value: w.Claim}, {Key: "cm", Value: id}}); err != nil {
				return fmt.Errorf("mongo: abort %s: %w", id, err)
			}
		}
	}
	if _, err := b.commits().DeleteOne(ctx, bson.D{{Key: "_id", Value: id}}); err != nil {
		return fmt.Errorf("mongo: abort %s: %w", id, err)
	}
	return nil
}

func unset(field string) bson.D {
	return bson.D{{Key: "$unset", Value: bson.D{{Key: field, Value: ""}}}}
}

// rollForward applies a committed record (step 4); it is idempotent, so
// recovery can run it again after a crash at any point.
func (b *Backend) rollForward(ctx context.Context, doc *commitDoc) error {
	for i := range doc.Writes {
		w := &doc.Writes[i]
		if !w.Last {
			continue
		}
		var old resourceDoc
		err := b.res.FindOneAndReplace(ctx, bson.D{{Key: "_id", Value: w.Key}, {Key: "pc", Value: doc.ID}}, w.Res,
			options.FindOneAndReplace().SetReturnDocument(options.Before)).Decode(&old)
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue // applied before a crash
		}
		if err != nil {
			return fmt.Errorf("mongo: apply %s of %s: %w", w.Key, doc.ID, err)
		}
		if old.Claim != "" && old.Claim != w.Claim {
			if _, err := b.claims.DeleteOne(ctx, bson.D{{Key: "_id", Value: old.Claim}, {Key: "r", Value: w.Key}}); err != nil {
				return fmt.Errorf("mongo: release claim of %s: %w", w.Key, err)
			}
		}
	}
	for i := range doc.Writes {
		w := &doc.Writes[i]
		if _, err := b.hist.UpdateOne(ctx, bson.D{{Key: "_id", Value: w.Hist.ID}, {Key: "pc", Value: doc.ID}}, unset("pc")); err != nil {
			return fmt.Errorf("mongo: apply %s: %w", doc.ID, err)
		}
		for _, ev := range w.Events {
			if _, err := b.outbox().UpdateOne(ctx, bson.D{{Key: "_id", Value: ev.ID}, {Key: "pc", Value: doc.ID}}, unset("pc")); err != nil {
				return fmt.Errorf("mongo: apply %s: %w", doc.ID, err)
			}
		}
		if w.Last && w.Claim != "" {
			if _, err := b.claims.UpdateOne(ctx, bson.D{{Key: "_id", Value: w.Claim}, {Key: "cm", Value: doc.ID}}, unset("cm")); err != nil {
				return fmt.Errorf("mongo: apply %s: %w", doc.ID, err)
			}
		}
	}
	for i := range doc.KV {
		// Idempotent: the same record, generation included, each time.
		if _, err := b.kv.ReplaceOne(ctx, bson.D{{Key: "_id", Value: doc.KV[i].Key}}, doc.KV[i], options.Replace().SetUpsert(true)); err != nil {
			return fmt.Errorf("mongo: apply kv %q of %s: %w", doc.KV[i].Key, doc.ID, err)
		}
	}
	// A done record is kept (staleAfter) only for the searches comparing
	// snapshots of record ids (isolated): its writes, the bulk of it, go,
	// so that those snapshots, which FerretDB answers by reading every
	// record whole, stay cheap during a stream of commits (an import).
	if _, err := b.commits().UpdateOne(ctx, bson.D{{Key: "_id", Value: doc.ID}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "st", Value: stDone}, {Key: "at", Value: time.Now()}}},
			{Key: "$unset", Value: bson.D{{Key: "w", Value: ""}, {Key: "kv", Value: ""}}}}); err != nil {
		return fmt.Errorf("mongo: finish %s: %w", doc.ID, err)
	}
	return nil
}

// cleanDone removes finished records once no search can still be
// comparing snapshots that contain them.
func (b *Backend) cleanDone(ctx context.Context) {
	_, err := b.commits().DeleteMany(ctx, bson.D{{Key: "st", Value: stDone}, {Key: "at", Value: bson.D{{Key: "$lt", Value: time.Now().Add(-b.staleAfter)}}}})
	if err != nil {
		b.log.DebugContext(ctx, "clean finished commit records", "err", err)
	}
}

// recover settles records older than any commit in flight: prepared ones
// are aborted, committed ones rolled forward.
func (b *Backend) recover(ctx context.Context) error {
	cur, err := b.commits().Find(ctx, bson.D{
		{Key: "st", Value: bson.D{{Key: "$in", Value: bson.A{stPrepared, stCommitted, stAborted}}}},
		{Key: "at", Value: bson.D{{Key: "$lte", Value: time.Now().Add(-b.staleAfter)}}},
	})
	if err != nil {
		return fmt.Errorf("mongo: recover commits: %w", err)
	}
	var docs []commitDoc
	if err := cur.All(ctx, &docs); err != nil {
		return fmt.Errorf("mongo: recover commits: %w", err)
	}
	for i := range docs {
		d := &docs[i]
		if d.State == stCommitted {
			err = b.rollForward(ctx, d)
		} else {
			err = b.abort(ctx, d)
		}
		if err != nil {
			return err
		}
		b.log.InfoContext(ctx, "recovered commit record", "id", d.ID, "state", d.State)
	}
	b.cleanDone(ctx)
	return nil
}

// commitState returns the state of a record, "" when it is gone.
func (b *Backend) commitState(ctx context.Context, id string) (string, error) {
	var d struct {
		State string `bson:"st"`
	}
	err := b.commits().FindOne(ctx, bson.D{{Key: "_id", Value: id}}, options.FindOne().SetProjection(bson.D{{Key: "st", Value: 1}})).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("mongo: commit state of %s: %w", id, err)
	}
	return d.State, nil
}

// pendingResource resolves a resource document locked by a commit: its new
// version once the commit is decided, else the document as stored.
func (b *Backend) pendingResource(ctx context.Context, d *resourceDoc) (*resourceDoc, error) {
	var c commitDoc
	err := b.commits().FindOne(ctx, bson.D{{Key: "_id", Value: d.Pending}}).Decode(&c)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return nil, fmt.Errorf("mongo: commit %s: %w", d.Pending, err)
	}
	if err == nil && visible(c.State) {
		for i := range c.Writes {
			if w := &c.Writes[i]; w.Key == d.ID && w.Last {
				return &w.Res, nil
			}
		}
	}
	return d, nil
}

// decidedCommits lists the records in "commit" or "done" (a search
// snapshot) and whether one is still being applied.
func (b *Backend) decidedCommits(ctx context.Context) (map[string]bool, bool, error) {
	cur, err := b.commits().Find(ctx, bson.D{{Key: "st", Value: bson.D{{Key: "$in", Value: bson.A{stCommitted, stDone}}}}},
		options.Find().SetProjection(bson.D{{Key: "st", Value: 1}}))
	if err != nil {
		return nil, false, fmt.Errorf("mongo: list commits: %w", err)
	}
	var docs []struct {
		ID    string `bson:"_id"`
		State string `bson:"st"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return nil, false, fmt.Errorf("mongo: list commits: %w", err)
	}
	ids := make(map[string]bool, len(docs))
	applying := false
	for _, d := range docs {
		ids[d.ID] = true
		applying = applying || d.State == stCommitted
	}
	return ids, applying, nil
}

// isolated runs a multi-document read so that it sees each commit record
// either entirely or not at all: no record may be half-applied when it
// starts, and none may be decided while it runs; otherwise it runs again.
//
// It waits for a record being applied as long as its writer may still be
// alive (until the record is older than staleAfter, when recover rolls it
// forward), not a fixed number of tries: on FerretDB a commit of a few
// hundred resources takes seconds to apply, and an import's observers,
// searching for the next batch, used to give up after about two.
func isolated[T any](ctx context.Context, b *Backend, read func() (T, error)) (T, error) {
	var zero T
	if b.transactions {
		return read()
	}
	const minTries = 200
	start, wait := time.Now(), 10*time.Millisecond
	for attempt := 0; attempt < minTries || time.Since(start) < 2*b.staleAfter; attempt++ {
		before, applying, err := b.decidedCommits(ctx)
		if err != nil {
			return zero, err
		}
		if applying {
			if attempt > 0 && attempt%(minTries/2) == 0 {
				if err := b.recover(ctx); err != nil {
					return zero, err
				}
			}
			if err := sleep(ctx, wait); err != nil {
				return zero, err
			}
			wait = min(2*wait, 100*time.Millisecond)
			continue
		}
		out, err := read()
		if err != nil {
			return zero, err
		}
		after, applying, err := b.decidedCommits(ctx)
		if err != nil {
			return zero, err
		}
		changed := applying
		for id := range after {
			changed = changed || !before[id]
		}
		if !changed {
			return out, nil
		}
	}
	return zero, fmt.Errorf("mongo: read kept overlapping commits for %s", time.Since(start).Round(time.Millisecond))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
