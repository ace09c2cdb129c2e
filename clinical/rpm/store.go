package rpm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// view reads the store as the Commit being observed will leave it: the
// writes of the set over what the backend holds (the backend alone sees
// the state before the Commit).
type view struct {
	cs      *fhir.CommitSet
	pending map[string]int // "Type/id" -> index of its last write in the set
}

func newView(cs *fhir.CommitSet) *view {
	v := &view{cs: cs, pending: map[string]int{}}
	for i := 0; i < cs.Len(); i++ {
		w := cs.Write(i)
		v.pending[w.Type+"/"+w.ID] = i
	}
	return v
}

// doc is a decoded resource with what identifies its version.
type doc struct {
	ref     string
	version int64
	updated time.Time
	res     map[string]any // nil for a delete
}

func decodeResource(raw []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

func docOf(rec storage.Record) (doc, error) {
	d := doc{ref: rec.Type + "/" + rec.ID, version: rec.VersionID, updated: rec.LastUpdated}
	if rec.Deleted {
		return d, nil
	}
	res, err := decodeResource(rec.JSON)
	if err != nil {
		return doc{}, fmt.Errorf("decoding %s version %d: %w", d.ref, rec.VersionID, err)
	}
	d.res = res
	return d, nil
}

// read returns the resource as the Commit leaves it; found is false when
// it never existed. A deleted resource is found with a nil res.
func (v *view) read(ctx context.Context, typ, id string) (doc, bool, error) {
	if i, ok := v.pending[typ+"/"+id]; ok {
		d, err := docOf(v.cs.Write(i).Record)
		return d, err == nil, err
	}
	return v.stored(ctx, typ, id)
}

// stored reads what the backend holds, before the Commit.
func (v *view) stored(ctx context.Context, typ, id string) (doc, bool, error) {
	rec, err := v.cs.Backend().Read(ctx, typ, id)
	if errors.Is(err, storage.ErrNotFound) {
		return doc{}, false, nil
	}
	if err != nil {
		return doc{}, false, fmt.Errorf("reading %s/%s: %w", typ, id, err)
	}
	d, err := docOf(rec)
	return d, err == nil, err
}

// search pages through q (sorted as the caller asks) and hands each
// current resource to visit, with the set's own versions in place of the
// stored ones; visit returns false to stop. Resources of the set that the
// backend did not return are visited at the end with extra, whatever
// their order: the caller filters and sorts.
func (v *view) search(ctx context.Context, q storage.Query, maxPages int, visit func(d doc) bool) error {
	typ := q.Types[0]
	seen := map[string]bool{}
	for page := 0; page < maxPages; page++ {
		p, err := v.cs.Backend().Search(ctx, q)
		if err != nil {
			return fmt.Errorf("searching %s: %w", typ, err)
		}
		for _, rec := range p.Records {
			key := rec.Type + "/" + rec.ID
			if _, mine := v.pending[key]; mine {
				continue // visited from the set below
			}
			d, err := docOf(rec)
			if err != nil {
				return err
			}
			if !visit(d) {
				return v.visitPending(typ, seen, visit)
			}
		}
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
	}
	return v.visitPending(typ, seen, visit)
}

func (v *view) visitPending(typ string, seen map[string]bool, visit func(d doc) bool) error {
	for i := 0; i < v.cs.Len(); i++ {
		w := v.cs.Write(i)
		key := w.Type + "/" + w.ID
		if w.Type != typ || seen[key] || v.pending[key] != i || w.Deleted {
			continue
		}
		seen[key] = true
		d, err := docOf(w.Record)
		if err != nil {
			return err
		}
		visit(d)
	}
	return nil
}

// Query building blocks over the index entries the resources registry
// extracts (parameter names of the R4 search parameters).

func refTo(param, typ, id string) storage.Expr {
	return storage.Match{Param: param, Kind: storage.KindReference, Cond: storage.And{Exprs: []storage.Expr{
		storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: typ},
		storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: id},
	}}}
}

func codeIn(param string, system string, codes []string) storage.Expr {
	or := make([]storage.Expr, len(codes))
	for i, c := range codes {
		or[i] = storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: c}
	}
	cond := storage.Expr(storage.Or{Exprs: or})
	if system != "" {
		cond = storage.And{Exprs: []storage.Expr{storage.Cmp{Field: storage.FieldSystem, Op: storage.OpEq, Value: system}, cond}}
	}
	return storage.Match{Param: param, Kind: storage.KindToken, Cond: cond}
}
