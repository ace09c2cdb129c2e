package mongo

import (
	"context"
	"fmt"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Sorted search in the database.
//
// A sorted search used to read every match and sort in Go, which bounded
// it by maxCandidates and made one heavy patient's pain trend read all of
// that patient's Observations for one page. Each resource document now
// carries its sort keys, denormalised from its index entries: for every
// (parameter, kind) it has, the lowest and the highest value in the
// ordering of storagetest's sort semantics (o.<param>~<kind>.l and .h).
// An ascending sort orders by .l, a descending one by .h, ties by _id
// ("Type/id", the order the Go path breaks ties in), so the server sorts,
// an index on (k, o.date~date.h) answers the pain trend, and paging is by
// keyset like unsorted search.
//
// Missing values sort last either way, which no MongoDB sort order gives
// for an absent field; the search runs in two phases instead: documents
// with the key, then those without it by _id. The cursor is the one the Go
// path writes (sort value with Has, then key), so a page may start on
// either path.
//
// Only a single sort key on an exact filter is sorted in the database;
// several keys (2^n phases) and filters re-checked in Go stay on the Go
// path, bounded by maxCandidates. Documents written before the keys
// existed lack them and sort as missing until reindexed.

// orderDoc is one sort key of a resource document.
type orderDoc struct {
	Low  any `bson:"l"`
	High any `bson:"h"`
}

// orderField names the sort key of (param, kind) in a resource document;
// ok is false for parameter names MongoDB cannot use in a field path.
func orderField(param string, k storage.Kind) (string, bool) {
	if param == "" || strings.ContainsAny(param, ".$~") {
		return "", false
	}
	return "o." + param + "~" + k.String(), true
}

// orderOf is the sort keys of a resource with index entries es: nil when
// it has none (a deleted resource).
func orderOf(es []storage.Entry) map[string]orderDoc {
	if len(es) == 0 {
		return nil
	}
	type bounds struct {
		kind   storage.Kind
		lo, hi sortVal
	}
	acc := map[string]*bounds{}
	for i := range es {
		e := &es[i]
		if checkSort(storage.Sort{Param: e.Param, Kind: e.Kind}) != nil {
			continue
		}
		f, ok := orderField(e.Param, e.Kind)
		if !ok {
			continue
		}
		name := strings.TrimPrefix(f, "o.")
		lo := valueOf(storage.Sort{Param: e.Param, Kind: e.Kind}, e)
		hi := valueOf(storage.Sort{Param: e.Param, Kind: e.Kind, Desc: true}, e)
		b := acc[name]
		if b == nil {
			acc[name] = &bounds{kind: e.Kind, lo: lo, hi: hi}
			continue
		}
		if compareVal(e.Kind, lo, b.lo) < 0 {
			b.lo = lo
		}
		if compareVal(e.Kind, hi, b.hi) > 0 {
			b.hi = hi
		}
	}
	if len(acc) == 0 {
		return nil
	}
	out := make(map[string]orderDoc, len(acc))
	for name, b := range acc {
		out[name] = orderDoc{Low: orderValue(b.kind, b.lo), High: orderValue(b.kind, b.hi)}
	}
	return out
}

// orderValue is the BSON value of a sort key: one BSON type per kind, so
// that MongoDB's order within the field is the Go order (int64 and double
// numerically, strings by bytes under the default simple collation).
func orderValue(k storage.Kind, v sortVal) any {
	switch k {
	case storage.KindDate:
		return v.I
	case storage.KindNumber, storage.KindQuantity:
		return v.N
	}
	return v.S
}

// orderSortVal reads a sort key back from a document for the cursor.
func orderSortVal(k storage.Kind, raw bson.RawValue) (sortVal, error) {
	switch k {
	case storage.KindDate:
		i, ok := raw.Int64OK()
		if !ok {
			return sortVal{}, fmt.Errorf("mongo: sort key of kind %s is %s", k, raw.Type)
		}
		return sortVal{Has: true, I: i}, nil
	case storage.KindNumber, storage.KindQuantity:
		n, ok := raw.DoubleOK()
		if !ok {
			return sortVal{}, fmt.Errorf("mongo: sort key of kind %s is %s", k, raw.Type)
		}
		return sortVal{Has: true, N: n}, nil
	}
	s, ok := raw.StringValueOK()
	if !ok {
		return sortVal{}, fmt.Errorf("mongo: sort key of kind %s is %s", k, raw.Type)
	}
	return sortVal{Has: true, S: s}, nil
}

// sortsInDB reports whether a search sorted by sorts can be sorted by the
// server.
func sortsInDB(sorts []storage.Sort) bool {
	if len(sorts) != 1 {
		return false
	}
	_, ok := orderField(sorts[0].Param, sorts[0].Kind)
	return ok
}

// searchSortedInDB pages a search with an exact filter and one sort key in
// the database (see the comment at the top of the file).
func (b *Backend) searchSortedInDB(ctx context.Context, full bson.D, q storage.Query, count int, qh string, after *searchCursor) (storage.Page, error) {
	s := q.Sort[0]
	field, _ := orderField(s.Param, s.Kind)
	if s.Desc {
		field += ".h"
	} else {
		field += ".l"
	}
	page := storage.Page{Total: -1}
	if q.Total {
		n, err := b.res.CountDocuments(ctx, full)
		if err != nil {
			return storage.Page{}, fmt.Errorf("mongo: search count: %w", err)
		}
		page.Total = n
	}
	if count == 0 {
		return page, nil
	}
	dir := 1
	cmpOp := "$gt"
	if s.Desc {
		dir, cmpOp = -1, "$lt"
	}
	type phase struct {
		filter bson.D
		sort   bson.D
	}
	var phases []phase
	has := bson.D{{Key: field, Value: bson.D{{Key: "$exists", Value: true}}}}
	missing := bson.D{{Key: field, Value: bson.D{{Key: "$exists", Value: false}}}}
	byID := bson.D{{Key: "_id", Value: 1}}
	switch {
	case after == nil:
		phases = append(phases,
			phase{and(full, has), bson.D{{Key: field, Value: dir}, {Key: "_id", Value: 1}}},
			phase{and(full, missing), byID})
	case after.K[0].Has:
		v := orderValue(s.Kind, after.K[0])
		next := bson.D{{Key: "$or", Value: bson.A{
			bson.D{{Key: field, Value: bson.D{{Key: cmpOp, Value: v}}}},
			bson.D{{Key: field, Value: v}, {Key: "_id", Value: bson.D{{Key: "$gt", Value: after.ID}}}},
		}}}
		phases = append(phases,
			phase{and(full, has, next), bson.D{{Key: field, Value: dir}, {Key: "_id", Value: 1}}},
			phase{and(full, missing), byID})
	default:
		phases = append(phases, phase{and(full, missing, bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: after.ID}}}}), byID})
	}
	proj := bson.D{{Key: "k", Value: 0}, {Key: "e", Value: 0}}
	var docs []bson.Raw
	for _, ph := range phases {
		want := count + 1 - len(docs)
		if want <= 0 {
			break
		}
		cur, err := b.res.Find(ctx, ph.filter, options.Find().SetSort(ph.sort).SetLimit(int64(want)).SetProjection(proj))
		if err != nil {
			return storage.Page{}, fmt.Errorf("mongo: sorted search: %w", err)
		}
		var got []bson.Raw
		if err := cur.All(ctx, &got); err != nil {
			return storage.Page{}, fmt.Errorf("mongo: sorted search: %w", err)
		}
		docs = append(docs, got...)
	}
	more := len(docs) > count
	if more {
		docs = docs[:count]
	}
	page.Records = make([]storage.Record, 0, len(docs))
	for _, raw := range docs {
		var d resourceDoc
		if err := bson.Unmarshal(raw, &d); err != nil {
			return storage.Page{}, fmt.Errorf("mongo: sorted search: %w", err)
		}
		page.Records = append(page.Records, d.record())
	}
	if more && len(docs) > 0 {
		last := docs[len(docs)-1]
		var d struct {
			ID string `bson:"_id"`
		}
		if err := bson.Unmarshal(last, &d); err != nil {
			return storage.Page{}, fmt.Errorf("mongo: sorted search: %w", err)
		}
		k := sortVal{}
		if rv, err := last.LookupErr(strings.Split(field, ".")...); err == nil {
			if k, err = orderSortVal(s.Kind, rv); err != nil {
				return storage.Page{}, err
			}
		}
		next, err := encodeCursor(searchCursor{Q: qh, K: []sortVal{k}, ID: d.ID})
		if err != nil {
			return storage.Page{}, err
		}
		page.Next = next
	}
	return page, nil
}
