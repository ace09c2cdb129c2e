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
var recordProjection = bson.D{{Key: "k", Value: 0}, {Key: "e", Value: 0}}

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

// History lists versions newest first by Seq.
func (b *Backend) History(ctx context.Context, req storage.HistoryRequest) (_ storage.Page, rerr error) {
	defer classify(&rerr)
	if req.ID != "" && req.Type == "" {
		return storage.Page{}, errors.New("mongo: history: an id needs a type")
	}
	count := req.Count
	if count <= 0 {
		count = defaultCount
	}
	count = min(count, maxCount)
	qh := hashOf("history", req.Type, req.ID, req.Since.UnixNano(), req.At.UnixNano(), req.Before.UnixNano())
	var after int64
	if req.Cursor != "" {
		var c historyCursor
		if err := decodeCursor(req.Cursor, &c); err != nil || c.Q != qh {
			return storage.Page{}, fmt.Errorf("mongo: history cursor: %w", storage.ErrBadCursor)
		}
		after = c.S
	}
	filter := bson.D{}
	if req.Type != "" {
		filter = append(filter, bson.E{Key: "t", Value: req.Type})
	}
	if req.ID != "" {
		filter = append(filter, bson.E{Key: "i", Value: req.ID})
	}
	var docs []historyDoc
	var err error
	if req.At.IsZero() {
		filter = append(filter, timeRange(req.Since, req.Before)...)
		if after > 0 {
			filter = append(filter, bson.E{Key: "s", Value: bson.D{{Key: "$lt", Value: after}}})
		}
		docs, err = b.findHistory(ctx, filter, int64(count+1))
	} else {
		docs, err = b.historyAt(ctx, filter, req, after, count)
	}
	if err != nil {
		return storage.Page{}, err
	}
	page := storage.Page{Total: -1}
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
func (b *Backend) historyAt(ctx context.Context, filter bson.D, req storage.HistoryRequest, after int64, count int) ([]historyDoc, error) {
	f := append(slices.Clone(filter), bson.E{Key: "un", Value: bson.D{{Key: "$lte", Value: req.At.UnixNano()}}})
	cur, err := b.hist.Find(ctx, f, options.Find().SetProjection(bson.D{
		{Key: "t", Value: 1}, {Key: "i", Value: 1}, {Key: "v", Value: 1}, {Key: "s", Value: 1}, {Key: "un", Value: 1}, {Key: "u", Value: 1}, {Key: "pc", Value: 1},
	}))
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
	var sel []historyDoc
	for _, d := range newest {
		t := instant(d.Updated, d.Nanos)
		if (!req.Since.IsZero() && t.Before(req.Since)) || (!req.Before.IsZero() && !t.Before(req.Before)) {
			continue
		}
		if after > 0 && d.Seq >= after {
			continue
		}
		sel = append(sel, d)
	}
	slices.SortFunc(sel, func(x, y historyDoc) int { return cmp.Compare(y.Seq, x.Seq) })
	if len(sel) > count+1 {
		sel = sel[:count+1]
	}
	ids := make([]string, len(sel))
	for i, d := range sel {
		ids[i] = d.ID
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return b.findHistory(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}}, 0)
}
