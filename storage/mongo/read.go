package mongo

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/anodyne-fhir/anodyne/storage"
)

// recordProjection leaves the index out of documents read for their record.
var recordProjection = bson.D{{Key: "k", Value: 0}, {Key: "e", Value: 0}, {Key: "o", Value: 0}}

// Read returns the current version of typ/id.
func (b *Backend) Read(ctx context.Context, typ, id string) (_ storage.Record, rerr error) {
	defer classify(&rerr)
	var d resourceDoc
	err := b.res.FindOne(ctx, bson.D{{Key: "_id", Value: resourceKey(typ, id)}},
		options.FindOne().SetProjection(recordProjection)).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return storage.Record{}, fmt.Errorf("mongo: read %s/%s: %w", typ, id, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Record{}, fmt.Errorf("mongo: read %s/%s: %w", typ, id, err)
	}
	cur := &d
	if d.Pending != "" {
		if cur, err = b.pendingResource(ctx, &d); err != nil {
			return storage.Record{}, err
		}
	}
	if cur.Placeholder {
		return storage.Record{}, fmt.Errorf("mongo: read %s/%s: %w", typ, id, storage.ErrNotFound)
	}
	return cur.record(), nil
}

// ReadVersion returns one version of typ/id.
func (b *Backend) ReadVersion(ctx context.Context, typ, id string, version int64) (_ storage.Record, rerr error) {
	defer classify(&rerr)
	var d historyDoc
	err := b.hist.FindOne(ctx, bson.D{{Key: "_id", Value: historyKey(typ, id, version)}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return storage.Record{}, fmt.Errorf("mongo: read %s/%s version %d: %w", typ, id, version, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Record{}, fmt.Errorf("mongo: read %s/%s version %d: %w", typ, id, version, err)
	}
	if d.Pending != "" {
		st, err := b.commitState(ctx, d.Pending)
		if err != nil {
			return storage.Record{}, err
		}
		if !visible(st) {
			return storage.Record{}, fmt.Errorf("mongo: read %s/%s version %d: not committed: %w", typ, id, version, storage.ErrNotFound)
		}
	}
	return d.record(), nil
}

// historyCursor continues a history listing after the version with Seq S.
type historyCursor struct {
	Q string `json:"q"`
	S int64  `json:"s"`
}

// History lists versions newest first by Seq. A filter becomes part of
// the find on the history documents' own k and e fields (as a search's
// on resources); where that is a superset (no $elemMatch), each version
// is re-checked with storage.Matches as the cursor is read, until the page
// is full.
func (b *Backend) History(ctx context.Context, req storage.HistoryRequest) (_ storage.Page, rerr error) {
	defer classify(&rerr)
	if req.ID != "" && req.Type == "" {
		return storage.Page{}, errors.New("mongo: history: an id needs a type")
	}
	clauses, err := req.Clauses()
	if err != nil {
		return storage.Page{}, fmt.Errorf("mongo: %w", err)
	}
	count := req.Count
	if count <= 0 {
		count = defaultCount
	}
	count = min(count, maxCount)
	qh := hashOf("history", req.Type, req.ID, req.Since.UnixNano(), req.At.UnixNano(), req.Before.UnixNano(), storage.HistoryKey(clauses))
	var after int64
	if req.Cursor != "" {
		var c historyCursor
		if err := decodeCursor(req.Cursor, &c); err != nil || c.Q != qh {
			return storage.Page{}, fmt.Errorf("mongo: history cursor: %w", storage.ErrBadCursor)
		}
		after = c.S
	}
	page := storage.Page{Total: -1}
	if len(clauses) == 0 {
		return page, nil // TypeFilters without a type: nothing is visible
	}
	sel, err := b.historySelector(ctx, clauses)
	if err != nil {
		return storage.Page{}, err
	}
	filter := bson.D{}
	if req.Type != "" {
		filter = append(filter, bson.E{Key: "t", Value: req.Type})
	}
	if req.ID != "" {
		filter = append(filter, bson.E{Key: "i", Value: req.ID})
	}
	var docs []historyDoc
	if req.At.IsZero() {
		filter = append(filter, timeRange(req.Since, req.Before)...)
		if after > 0 {
			filter = append(filter, bson.E{Key: "s", Value: bson.D{{Key: "$lt", Value: after}}})
		}
		docs, err = b.findHistoryMatching(ctx, and(filter, sel.filter), count+1, sel)
	} else {
		docs, err = b.historyAt(ctx, filter, req, after, count, sel)
	}
	if err != nil {
		return storage.Page{}, err
	}
	if len(docs) > count {
		// The cursor continues after the last version examined, even
		// when that one is dropped below as not yet committed.
		docs = docs[:count]
		next, err := encodeCursor(historyCursor{Q: qh, S: docs[count-1].Seq})
		if err != nil {
			return storage.Page{}, err
		}
		page.Next = next
	}
	if docs, err = b.visibleHistory(ctx, docs); err != nil {
		return storage.Page{}, err
	}
	page.Records = make([]storage.Record, len(docs))
	for i := range docs {
		page.Records[i] = docs[i].record()
	}
	return page, nil
}

// historySel is the filter part of a history request: filter selects the
// matching versions (exactly, or a superset when !exact) and clauses
// re-check them.
type historySel struct {
	filter  bson.D
	exact   bool
	clauses []storage.HistoryClause
}

func (b *Backend) historySelector(ctx context.Context, clauses []storage.HistoryClause) (historySel, error) {
	sel := historySel{exact: true, clauses: clauses}
	var alts bson.A
	for _, c := range clauses {
		f := bson.D{}
		if c.Type != "" {
			f = bson.D{{Key: "t", Value: c.Type}}
		}
		if c.Filter != nil {
			// Clauses refused Chain and Has, so resolving reads nothing.
			root, err := b.resolve(ctx, c.Filter, 0)
			if err != nil {
				return historySel{}, err
			}
			cf, exact, err := b.filter(root)
			if err != nil {
				return historySel{}, err
			}
			sel.exact = sel.exact && exact
			// A version stored without entries never matches a filter.
			f = and(f, bson.D{{Key: "ek", Value: true}}, cf)
		}
		if len(f) == 0 {
			// One alternative admits every version: no filter at all.
			return historySel{filter: bson.D{}, exact: true, clauses: clauses}, nil
		}
		alts = append(alts, f)
	}
	if len(alts) == 1 {
		sel.filter = alts[0].(bson.D)
	} else {
		sel.filter = bson.D{{Key: "$or", Value: alts}}
	}
	return sel, nil
}

// matches re-checks a version against the clauses.
func (s *historySel) matches(d *historyDoc) (bool, error) {
	if s.exact {
		return true, nil
	}
	entries := d.Own.entries()
	for _, c := range s.clauses {
		ok, err := storage.MatchesVersion(c, d.Type, d.LID, entries)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// findHistoryMatching reads up to limit matching versions newest first;
// with a superset filter it reads on until it has them or the versions end.
func (b *Backend) findHistoryMatching(ctx context.Context, filter bson.D, limit int, sel historySel) ([]historyDoc, error) {
	if sel.exact {
		return b.findHistory(ctx, filter, int64(limit))
	}
	cur, err := b.hist.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "s", Value: -1}}).SetBatchSize(int32(min(limit, 1000))))
	if err != nil {
		return nil, fmt.Errorf("mongo: history: %w", err)
	}
	defer cur.Close(ctx)
	var docs []historyDoc
	for len(docs) < limit && cur.Next(ctx) {
		var d historyDoc
		if err := cur.Decode(&d); err != nil {
			return nil, fmt.Errorf("mongo: history: %w", err)
		}
		ok, err := sel.matches(&d)
		if err != nil {
			return nil, fmt.Errorf("mongo: history %s: %w", d.ID, err)
		}
		if ok {
			docs = append(docs, d)
		}
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("mongo: history: %w", err)
	}
	return docs, nil
}

// timeRange filters lastUpdated to [since, before); the un field keeps the
// caller's exact instant, so the comparison is made on it.
func timeRange(since, before time.Time) bson.D {
	var r bson.D
	if !since.IsZero() {
		r = append(r, bson.E{Key: "$gte", Value: since.UnixNano()})
	}
	if !before.IsZero() {
		r = append(r, bson.E{Key: "$lt", Value: before.UnixNano()})
	}
	if r == nil {
		return nil
	}
	return bson.D{{Key: "un", Value: r}}
}

func (b *Backend) findHistory(ctx context.Context, filter bson.D, limit int64) ([]historyDoc, error) {
	opts := options.Find().SetSort(bson.D{{Key: "s", Value: -1}})
	if limit > 0 {
		opts.SetLimit(limit)
	}
	cur, err := b.hist.Find(ctx, filter, opts)
	if err != nil {
		return nil, fmt.Errorf("mongo: history: %w", err)
	}
	var docs []historyDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("mongo: history: %w", err)
	}
	return docs, nil
}

// visibleHistory drops versions of commit records not yet decided.
func (b *Backend) visibleHistory(ctx context.Context, docs []historyDoc) ([]historyDoc, error) {
	states := map[string]bool{}
	out := docs[:0]
	for _, d := range docs {
		if d.Pending != "" {
			vis, ok := states[d.Pending]
			if !ok {
				st, err := b.commitState(ctx, d.Pending)
				if err != nil {
					return nil, err
				}
				vis = visible(st)
				states[d.Pending] = vis
			}
			if !vis {
				continue
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// historyAt selects, per resource, the newest version with lastUpdated <=
// At, then applies Since/Before and paging. The selection needs every
// version up to At, so it runs in two passes: ids and versions first, then
// the page's documents.
//
// The filter applies to the version selected for a resource, never to the
// choice: a resource whose version at At is outside the filter is left
// out, not represented by an older version that was inside it.
func (b *Backend) historyAt(ctx context.Context, filter bson.D, req storage.HistoryRequest, after int64, count int, sel historySel) ([]historyDoc, error) {
	f := append(slices.Clone(filter), bson.E{Key: "un", Value: bson.D{{Key: "$lte", Value: req.At.UnixNano()}}})
	proj := bson.D{
		{Key: "t", Value: 1}, {Key: "i", Value: 1}, {Key: "v", Value: 1}, {Key: "s", Value: 1}, {Key: "un", Value: 1}, {Key: "u", Value: 1}, {Key: "pc", Value: 1},
	}
	if len(sel.filter) > 0 {
		proj = append(proj, bson.E{Key: "e", Value: 1}, bson.E{Key: "ek", Value: 1})
	}
	cur, err := b.hist.Find(ctx, f, options.Find().SetProjection(proj))
	if err != nil {
		return nil, fmt.Errorf("mongo: history at: %w", err)
	}
	var all []historyDoc
	if err := cur.All(ctx, &all); err != nil {
		return nil, fmt.Errorf("mongo: history at: %w", err)
	}
	if len(all) > maxCandidates {
		return nil, fmt.Errorf("mongo: history at: more than %d versions: %w", maxCandidates, storage.ErrUnsupported)
	}
	if all, err = b.visibleHistory(ctx, all); err != nil {
		return nil, err
	}
	newest := map[string]historyDoc{}
	for _, d := range all {
		k := resourceKey(d.Type, d.LID)
		if old, ok := newest[k]; !ok || d.Version > old.Version {
			newest[k] = d
		}
	}
	var picked []historyDoc
	for _, d := range newest {
		t := instant(d.Updated, d.Nanos)
		if (!req.Since.IsZero() && t.Before(req.Since)) || (!req.Before.IsZero() && !t.Before(req.Before)) {
			continue
		}
		if after > 0 && d.Seq >= after {
			continue
		}
		if len(sel.filter) > 0 {
			// Re-checked in Go whatever the filter's exactness: the
			// selection above read every version up to At.
			check := sel
			check.exact = false
			if ok, err := check.matches(&d); err != nil {
				return nil, fmt.Errorf("mongo: history at %s: %w", d.ID, err)
			} else if !ok {
				continue
			}
		}
		picked = append(picked, d)
	}
	slices.SortFunc(picked, func(x, y historyDoc) int { return cmp.Compare(y.Seq, x.Seq) })
	if len(picked) > count+1 {
		picked = picked[:count+1]
	}
	ids := make([]string, len(picked))
	for i, d := range picked {
		ids[i] = d.ID
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return b.findHistory(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}}, 0)
}
