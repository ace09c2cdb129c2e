package mongo

import (
	"cmp"
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/anodyne-fhir/anodyne/storage"
)

// maxDepth bounds the nesting of Chain and Has, each level being a query.
const maxDepth = 4

// nodeOp is the operator of a resolved expression node.
type nodeOp uint8

const (
	opAnd nodeOp = iota + 1
	opOr
	opNot
	opMatch
	opIDs
	opRefIn // Chain, resolved: a reference key of the resource is in keys
	opKeyIn // Has, resolved: the resource's "Type/id" is in keys
)

// node is a storage.Expr with Chain and Has already evaluated to sets, so
// that it can be both translated to a filter and evaluated in Go.
type node struct {
	op    nodeOp
	subs  []*node
	match storage.Match
	param string          // opRefIn: the outer reference parameter
	list  []string        // opIDs: ids; opRefIn, opKeyIn: keys
	set   map[string]bool // the same as list, for evaluation
}

// candidate is a resource as seen by Go-side evaluation and sorting.
type candidate struct {
	key     string
	entries []storage.Entry
	sortKey []sortVal
	rec     *storage.Record // set when the candidate pass read whole documents
}

// sortVal is one sort key of a candidate; Has is false when it has no value.
type sortVal struct {
	Has bool    `json:"h,omitempty"`
	S   string  `json:"s,omitempty"`
	I   int64   `json:"i,omitempty"`
	N   float64 `json:"n,omitempty"`
}

// searchCursor continues a search after the candidate (K, ID).
type searchCursor struct {
	Q  string    `json:"q"`
	K  []sortVal `json:"k,omitempty"`
	ID string    `json:"id"`
}

// Search evaluates q over current, non-deleted resources.
func (b *Backend) Search(ctx context.Context, q storage.Query) (_ storage.Page, rerr error) {
	defer classify(&rerr)
	if q.Count < 0 {
		return storage.Page{}, fmt.Errorf("mongo: search: negative count %d", q.Count)
	}
	count := min(q.Count, maxCount)
	for _, s := range q.Sort {
		if err := checkSort(s); err != nil {
			return storage.Page{}, err
		}
	}
	qh := hashOf("search", strings.Join(q.Types, ","), fmt.Sprint(q.Filter), fmt.Sprint(q.Sort))
	var after *searchCursor
	if q.Cursor != "" {
		var c searchCursor
		if err := decodeCursor(q.Cursor, &c); err != nil || c.Q != qh || len(c.K) != len(q.Sort) {
			return storage.Page{}, fmt.Errorf("mongo: search cursor: %w", storage.ErrBadCursor)
		}
		after = &c
	}
	// A search reads many documents; isolated makes it see commit records
	// whole (see atomic.go).
	return isolated(ctx, b, func() (storage.Page, error) {
		root, full, exact, err := b.searchFilter(ctx, q)
		if err != nil {
			return storage.Page{}, err
		}
		if exact && len(q.Sort) == 0 && b.dbPaging {
			return b.searchInDB(ctx, full, q, count, qh, after)
		}
		if exact && b.dbPaging && sortsInDB(q.Sort) {
			return b.searchSortedInDB(ctx, full, q, count, qh, after)
		}
		return b.searchInGo(ctx, full, exact, root, q, count, qh, after)
	})
}

// searchFilter is the filter on resources of q: exact, or a superset that
// root re-checks in Go.
func (b *Backend) searchFilter(ctx context.Context, q storage.Query) (root *node, full bson.D, exact bool, err error) {
	root, err = b.resolve(ctx, q.Filter, 0)
	if err != nil {
		return nil, nil, false, err
	}
	f, exact, err := b.filter(root)
	if err != nil {
		return nil, nil, false, err
	}
	full = and(baseFilter(q.Types), f)
	if t := b.targetFilter(q); t != nil {
		full = and(full, t)
	}
	return root, full, exact, nil
}

// searchInDB pages in the database by keyset on _id: the filter is exact
// and the order is type then id.
func (b *Backend) searchInDB(ctx context.Context, full bson.D, q storage.Query, count int, qh string, after *searchCursor) (storage.Page, error) {
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
	f := full
	if after != nil {
		f = and(full, bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: after.ID}}}})
	}
	cur, err := b.res.Find(ctx, f, options.Find().
		SetSort(bson.D{{Key: "_id", Value: 1}}).
		SetLimit(int64(count+1)).
		SetProjection(recordProjection))
	if err != nil {
		return storage.Page{}, fmt.Errorf("mongo: search: %w", err)
	}
	var docs []resourceDoc
	if err := cur.All(ctx, &docs); err != nil {
		return storage.Page{}, fmt.Errorf("mongo: search: %w", err)
	}
	if len(docs) > count {
		docs = docs[:count]
		next, err := encodeCursor(searchCursor{Q: qh, ID: docs[count-1].ID})
		if err != nil {
			return storage.Page{}, err
		}
		page.Next = next
	}
	page.Records = make([]storage.Record, len(docs))
	for i := range docs {
		page.Records[i] = docs[i].record()
	}
	return page, nil
}

// searchInGo re-checks (when the filter is a superset), sorts and pages the
// candidates in Go, then reads the page's documents.
func (b *Backend) searchInGo(ctx context.Context, full bson.D, exact bool, root *node, q storage.Query, count int, qh string, after *searchCursor) (storage.Page, error) {
	// Where every find is a full scan (!dbPaging), a second find for the
	// page's documents would double the cost, so the candidate pass reads
	// whole documents; elsewhere the page is fetched through the _id index.
	cands, err := b.candidates(ctx, full, exact, root, b.candidateLimit, !b.dbPaging)
	if err != nil {
		return storage.Page{}, err
	}
	for i := range cands {
		cands[i].sortKey = sortKeyOf(q.Sort, cands[i].entries)
	}
	slices.SortFunc(cands, func(x, y candidate) int { return compareCand(q.Sort, x.sortKey, x.key, y.sortKey, y.key) })
	page := storage.Page{Total: -1}
	if q.Total {
		page.Total = int64(len(cands))
	}
	if count == 0 {
		return page, nil
	}
	start := 0
	if after != nil {
		start, _ = slices.BinarySearchFunc(cands, after, func(c candidate, a *searchCursor) int {
			if compareCand(q.Sort, c.sortKey, c.key, a.K, a.ID) <= 0 {
				return -1
			}
			return 1
		})
	}
	end := min(start+count, len(cands))
	sel := cands[start:end]
	if end < len(cands) && len(sel) > 0 {
		last := sel[len(sel)-1]
		next, err := encodeCursor(searchCursor{Q: qh, K: last.sortKey, ID: last.key})
		if err != nil {
			return storage.Page{}, err
		}
		page.Next = next
	}
	if len(sel) == 0 {
		return page, nil
	}
	if sel[0].rec != nil {
		for _, c := range sel {
			page.Records = append(page.Records, *c.rec)
		}
		return page, nil
	}
	keys := make([]string, len(sel))
	for i, c := range sel {
		keys[i] = c.key
	}
	cur, err := b.res.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: keys}}}, {Key: "d", Value: false}},
		options.Find().SetProjection(recordProjection))
	if err != nil {
		return storage.Page{}, fmt.Errorf("mongo: search page: %w", err)
	}
	var docs []resourceDoc
	if err := cur.All(ctx, &docs); err != nil {
		return storage.Page{}, fmt.Errorf("mongo: search page: %w", err)
	}
	byKey := make(map[string]*resourceDoc, len(docs))
	for i := range docs {
		byKey[docs[i].ID] = &docs[i]
	}
	for _, k := range keys {
		// A resource deleted between the two reads is left out of the page.
		if d, ok := byKey[k]; ok {
			page.Records = append(page.Records, d.record())
		}
	}
	return page, nil
}

// candidates reads the ids and entries of the resources matching full and
// keeps those for which root holds. More than limit matches is an error:
// the caller would otherwise answer from a partial set.
func (b *Backend) candidates(ctx context.Context, full bson.D, exact bool, root *node, limit int, whole bool) ([]candidate, error) {
	proj := bson.D{{Key: "_id", Value: 1}, {Key: "e", Value: 1}}
	if whole {
		proj = bson.D{{Key: "k", Value: 0}, {Key: "o", Value: 0}}
	}
	cur, err := b.res.Find(ctx, full, options.Find().SetProjection(proj))
	if err != nil {
		return nil, fmt.Errorf("mongo: search candidates: %w", err)
	}
	defer cur.Close(ctx)
	var out []candidate
	for cur.Next(ctx) {
		var d resourceDoc
		if err := cur.Decode(&d); err != nil {
			return nil, fmt.Errorf("mongo: search candidates: %w", err)
		}
		c := candidate{key: d.ID, entries: fromEntryDocs(d.Entries)}
		if whole {
			r := d.record()
			c.rec = &r
		}
		if !exact {
			ok, err := eval(root, &c)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
		}
		if len(out) >= limit {
			return nil, fmt.Errorf("mongo: search: more than %d matches: %w", limit, storage.ErrUnsupported)
		}
		out = append(out, c)
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("mongo: search candidates: %w", err)
	}
	return out, nil
}

// matching evaluates expr over types completely (for Chain and Has).
func (b *Backend) matching(ctx context.Context, types []string, expr storage.Expr, depth, limit int) ([]candidate, error) {
	root, err := b.resolve(ctx, expr, depth)
	if err != nil {
		return nil, err
	}
	f, exact, err := b.filter(root)
	if err != nil {
		return nil, err
	}
	return b.candidates(ctx, and(baseFilter(types), f), exact, root, limit, false)
}

// resolve turns expr into a node tree, running the inner queries of Chain
// and Has.
func (b *Backend) resolve(ctx context.Context, expr storage.Expr, depth int) (*node, error) {
	switch x := expr.(type) {
	case nil:
		return &node{op: opAnd}, nil
	case storage.And:
		return b.resolveList(ctx, opAnd, x.Exprs, depth)
	case storage.Or:
		return b.resolveList(ctx, opOr, x.Exprs, depth)
	case storage.Not:
		if x.Expr == nil {
			return nil, fmt.Errorf("mongo: Not without an expression: %w", storage.ErrUnsupported)
		}
		sub, err := b.resolve(ctx, x.Expr, depth)
		if err != nil {
			return nil, err
		}
		return &node{op: opNot, subs: []*node{sub}}, nil
	case storage.Match:
		return &node{op: opMatch, match: x}, nil
	case storage.IDs:
		return &node{op: opIDs, list: x.IDs, set: setOf(x.IDs)}, nil
	case storage.Chain:
		if depth >= maxDepth {
			return nil, fmt.Errorf("mongo: chain nested deeper than %d: %w", maxDepth, storage.ErrUnsupported)
		}
		inner, err := b.matching(ctx, []string{x.Target}, x.Where, depth+1, maxJoin)
		if err != nil {
			return nil, fmt.Errorf("mongo: chain %s:%s: %w", x.Param, x.Target, err)
		}
		keys := make([]string, len(inner))
		for i, c := range inner {
			keys[i] = refKey(x.Param, x.Target, strings.TrimPrefix(c.key, x.Target+"/"))
		}
		return &node{op: opRefIn, param: x.Param, list: keys, set: setOf(keys)}, nil
	case storage.Has:
		if depth >= maxDepth {
			return nil, fmt.Errorf("mongo: _has nested deeper than %d: %w", maxDepth, storage.ErrUnsupported)
		}
		inner, err := b.matching(ctx, []string{x.Type}, x.Where, depth+1, maxCandidates)
		if err != nil {
			return nil, fmt.Errorf("mongo: _has %s:%s: %w", x.Type, x.Param, err)
		}
		set := map[string]bool{}
		for _, c := range inner {
			for _, e := range c.entries {
				if e.Param == x.Param && e.Kind == storage.KindReference && e.RefType != "" && e.RefID != "" {
					set[resourceKey(e.RefType, e.RefID)] = true
				}
			}
		}
		if len(set) > maxJoin {
			return nil, fmt.Errorf("mongo: _has %s:%s points to more than %d resources: %w", x.Type, x.Param, maxJoin, storage.ErrUnsupported)
		}
		keys := make([]string, 0, len(set))
		for k := range set {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return &node{op: opKeyIn, list: keys, set: set}, nil
	default:
		return nil, fmt.Errorf("mongo: resource-level expression %v: %w", expr, storage.ErrUnsupported)
	}
}

func (b *Backend) resolveList(ctx context.Context, op nodeOp, exprs []storage.Expr, depth int) (*node, error) {
	n := &node{op: op}
	for _, e := range exprs {
		sub, err := b.resolve(ctx, e, depth)
		if err != nil {
			return nil, err
		}
		n.subs = append(n.subs, sub)
	}
	return n, nil
}

func setOf(list []string) map[string]bool {
	s := make(map[string]bool, len(list))
	for _, v := range list {
		s[v] = true
	}
	return s
}

// eval is the Go-side meaning of a node, for candidates of a superset filter.
func eval(n *node, c *candidate) (bool, error) {
	switch n.op {
	case opAnd:
		for _, s := range n.subs {
			ok, err := eval(s, c)
			if err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	case opOr:
		for _, s := range n.subs {
			ok, err := eval(s, c)
			if err != nil || ok {
				return ok, err
			}
		}
		return false, nil
	case opNot:
		ok, err := eval(n.subs[0], c)
		return !ok && err == nil, err
	case opMatch:
		_, id, _ := strings.Cut(c.key, "/")
		return storage.Matches(n.match, id, c.entries)
	case opIDs:
		_, id, _ := strings.Cut(c.key, "/")
		return n.set[id], nil
	case opRefIn:
		for i := range c.entries {
			e := &c.entries[i]
			if e.Param == n.param && e.Kind == storage.KindReference && n.set[refKey(e.Param, e.RefType, e.RefID)] {
				return true, nil
			}
		}
		return false, nil
	case opKeyIn:
		return n.set[c.key], nil
	}
	return false, fmt.Errorf("mongo: evaluate node %d: %w", n.op, storage.ErrUnsupported)
}

// Filters. An empty bson.D matches everything; matchNothing nothing.

func matchNothing() bson.D {
	return bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: bson.A{}}}}}
}

func baseFilter(types []string) bson.D {
	f := bson.D{{Key: "d", Value: false}}
	switch len(types) {
	case 0:
	case 1:
		f = append(f, bson.E{Key: "t", Value: types[0]})
	default:
		f = append(f, bson.E{Key: "t", Value: bson.D{{Key: "$in", Value: types}}})
	}
	return f
}

// and combines filters, flattening the top level so that the fields stay
// visible to the query planner (and to the index-shape test).
func and(fs ...bson.D) bson.D {
	var out bson.D
	var rest bson.A
	seen := map[string]bool{}
	for _, f := range fs {
		for _, e := range f {
			if seen[e.Key] || strings.HasPrefix(e.Key, "$") {
				rest = append(rest, bson.D{e})
				continue
			}
			seen[e.Key] = true
			out = append(out, e)
		}
	}
	if len(rest) > 0 {
		out = append(out, bson.E{Key: "$and", Value: rest})
	}
	if out == nil {
		out = bson.D{}
	}
	return out
}

// filter translates a node. exact reports whether the filter selects
// exactly the resources for which the node holds; when false it selects a
// superset and the caller re-checks with eval.
func (b *Backend) filter(n *node) (bson.D, bool, error) {
	switch n.op {
	case opAnd:
		exact := true
		var fs []bson.D
		for _, s := range n.subs {
			f, e, err := b.filter(s)
			if err != nil {
				return nil, false, err
			}
			exact = exact && e
			fs = append(fs, f)
		}
		return and(fs...), exact, nil
	case opOr:
		if len(n.subs) == 0 {
			return matchNothing(), true, nil
		}
		exact := true
		var alts bson.A
		all := false
		for _, s := range n.subs {
			f, e, err := b.filter(s)
			if err != nil {
				return nil, false, err
			}
			exact = exact && e
			if len(f) == 0 {
				all = true
			}
			alts = append(alts, f)
		}
		if all {
			return bson.D{}, exact, nil
		}
		return bson.D{{Key: "$or", Value: alts}}, exact, nil
	case opNot:
		f, e, err := b.filter(n.subs[0])
		if err != nil {
			return nil, false, err
		}
		if !e {
			// The complement of a superset is not a superset.
			return bson.D{}, false, nil
		}
		if len(f) == 0 {
			return matchNothing(), true, nil
		}
		return bson.D{{Key: "$nor", Value: bson.A{f}}}, true, nil
	case opIDs:
		return bson.D{{Key: "i", Value: bson.D{{Key: "$in", Value: nonNil(n.list)}}}}, true, nil
	case opRefIn:
		return bson.D{{Key: "k", Value: bson.D{{Key: "$in", Value: nonNil(n.list)}}}}, true, nil
	case opKeyIn:
		return bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: nonNil(n.list)}}}}, true, nil
	case opMatch:
		return b.matchFilter(n.match)
	}
	return nil, false, fmt.Errorf("mongo: translate node %d: %w", n.op, storage.ErrUnsupported)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// matchFilter selects resources with an entry of m.Param satisfying m.Cond.
// The k keys narrow the search through the {t, k} index on every server;
// $elemMatch, where it works, makes the filter exact.
func (b *Backend) matchFilter(m storage.Match) (bson.D, bool, error) {
	if m.Kind < storage.KindString || m.Kind > storage.KindComposite {
		return nil, false, fmt.Errorf("mongo: %v: unknown kind: %w", m, storage.ErrUnsupported)
	}
	keys := append([]string{markerKey(m.Param, m.Kind)}, eqKeys(m.Param, m.Kind, m.Cond)...)
	var f bson.D
	if len(keys) == 1 {
		f = bson.D{{Key: "k", Value: keys[0]}}
	} else {
		f = bson.D{{Key: "k", Value: bson.D{{Key: "$all", Value: keys}}}}
	}
	if !b.elemMatch {
		// Validate the condition even though the server cannot use it, so
		// that a malformed Cmp is an error on every backend.
		if _, err := entryCond(m.Cond, "", m.Kind); err != nil {
			return nil, false, err
		}
		if typ, id, ok := refEq(m.Kind, m.Cond); ok {
			// "Type/id" has a key of its own: exact without $elemMatch.
			return bson.D{{Key: "k", Value: refKey(m.Param, typ, id)}}, true, nil
		}
		return f, singleEq(m.Cond), nil
	}
	cond, err := entryCond(m.Cond, "", m.Kind)
	if err != nil {
		return nil, false, err
	}
	em := bson.D{{Key: "p", Value: m.Param}, {Key: "k", Value: int32(m.Kind)}}
	em = append(em, cond...)
	f = append(f, bson.E{Key: "e", Value: bson.D{{Key: "$elemMatch", Value: em}}})
	return f, true, nil
}

// eqKeys lists the k keys implied by the conjunctive equalities of cond.
func eqKeys(param string, kind storage.Kind, cond storage.Expr) []string {
	switch x := cond.(type) {
	case storage.Cmp:
		if s, ok := x.Value.(string); ok && x.Op == storage.OpEq && s != "" && isStringField(x.Field) {
			return []string{fieldKey(param, kind, x.Field, s)}
		}
	case storage.And:
		var out []string
		for _, sub := range x.Exprs {
			out = append(out, eqKeys(param, kind, sub)...)
		}
		return out
	}
	return nil
}

// singleEq reports whether the k keys of cond alone are exact: no
// condition, or one equality on one string field.
func singleEq(cond storage.Expr) bool {
	switch x := cond.(type) {
	case nil:
		return true
	case storage.Cmp:
		s, ok := x.Value.(string)
		return ok && x.Op == storage.OpEq && s != "" && isStringField(x.Field)
	case storage.And:
		return len(x.Exprs) == 0 || (len(x.Exprs) == 1 && singleEq(x.Exprs[0]))
	}
	return false
}

// refEq recognises a reference condition that is exactly type = typ and
// id = id, the shape of patient=ID and of compartment filters.
func refEq(kind storage.Kind, cond storage.Expr) (typ, id string, ok bool) {
	and, isAnd := cond.(storage.And)
	if kind != storage.KindReference || !isAnd || len(and.Exprs) != 2 {
		return "", "", false
	}
	for _, e := range and.Exprs {
		c, isCmp := e.(storage.Cmp)
		s, isStr := c.Value.(string)
		if !isCmp || !isStr || c.Op != storage.OpEq || s == "" {
			return "", "", false
		}
		switch c.Field {
		case storage.FieldRefType:
			typ = s
		case storage.FieldRefID:
			id = s
		default:
			return "", "", false
		}
	}
	return typ, id, typ != "" && id != ""
}

func isStringField(f storage.Field) bool { return slices.Contains(stringFields[:], f) }

// entryCond translates an entry-level condition into an $elemMatch body
// (fields relative to the entry, under prefix for composite parts).
//
// kind is the kind of the entry the condition applies to, 0 inside a
// composite part (whose kind the condition does not say).
func entryCond(cond storage.Expr, prefix string, kind storage.Kind) (bson.D, error) {
	never := bson.D{{Key: prefix + "k", Value: bson.D{{Key: "$in", Value: bson.A{}}}}}
	switch x := cond.(type) {
	case nil:
		return bson.D{}, nil
	case storage.And:
		var subs bson.A
		for _, s := range x.Exprs {
			d, err := entryCond(s, prefix, kind)
			if err != nil {
				return nil, err
			}
			if len(d) > 0 {
				subs = append(subs, d)
			}
		}
		if len(subs) == 0 {
			return bson.D{}, nil
		}
		return bson.D{{Key: "$and", Value: subs}}, nil
	case storage.Or:
		if len(x.Exprs) == 0 {
			return never, nil
		}
		var subs bson.A
		for _, s := range x.Exprs {
			d, err := entryCond(s, prefix, kind)
			if err != nil {
				return nil, err
			}
			if len(d) == 0 {
				return bson.D{}, nil
			}
			subs = append(subs, d)
		}
		return bson.D{{Key: "$or", Value: subs}}, nil
	case storage.Not:
		d, err := entryCond(x.Expr, prefix, kind)
		if err != nil {
			return nil, err
		}
		if len(d) == 0 {
			return never, nil
		}
		return bson.D{{Key: "$nor", Value: bson.A{d}}}, nil
	case storage.Part:
		if kind != storage.KindComposite {
			return nil, fmt.Errorf("mongo: %v outside a composite: %w", x, storage.ErrUnsupported)
		}
		if x.Index < 0 {
			return never, nil
		}
		path := prefix + "parts." + strconv.Itoa(x.Index)
		d, err := entryCond(x.Cond, path+".", 0)
		if err != nil {
			return nil, err
		}
		exists := bson.D{{Key: path, Value: bson.D{{Key: "$exists", Value: true}}}}
		if len(d) == 0 {
			return exists, nil
		}
		return bson.D{{Key: "$and", Value: bson.A{exists, d}}}, nil
	case storage.Cmp:
		return cmpCond(x, prefix, kind)
	}
	return nil, fmt.Errorf("mongo: entry-level expression %v: %w", cond, storage.ErrUnsupported)
}

var mongoOps = map[storage.Op]string{
	storage.OpEq: "$eq", storage.OpNe: "$ne", storage.OpLt: "$lt",
	storage.OpLe: "$lte", storage.OpGt: "$gt", storage.OpGe: "$gte",
}

func cmpCond(c storage.Cmp, prefix string, kind storage.Kind) (bson.D, error) {
	name, ok := fieldName(c.Field)
	if !ok {
		return nil, fmt.Errorf("mongo: unknown field in %v: %w", c, storage.ErrUnsupported)
	}
	// The reference evaluator on an empty entry both validates the value's
	// type and tells whether a missing (zero, so omitted) field satisfies c.
	zero, err := storage.MatchEntry(c, &storage.Entry{})
	if err != nil {
		return nil, fmt.Errorf("mongo: %w", err)
	}
	path := prefix + name
	var cond bson.D
	switch c.Op {
	case storage.OpPrefix, storage.OpContains:
		s, ok := c.Value.(string)
		if !ok {
			return nil, fmt.Errorf("mongo: %v on a non-string value: %w", c, storage.ErrUnsupported)
		}
		re := regexp.QuoteMeta(s)
		if c.Op == storage.OpPrefix {
			re = "^" + re
		}
		cond = bson.D{{Key: path, Value: bson.D{{Key: "$regex", Value: re}}}}
	default:
		op, ok := mongoOps[c.Op]
		if !ok {
			return nil, fmt.Errorf("mongo: operator in %v: %w", c, storage.ErrUnsupported)
		}
		cond = bson.D{{Key: path, Value: bson.D{{Key: op, Value: c.Value}}}}
	}
	dates, nums := alwaysNumeric(kind)
	switch c.Field {
	case storage.FieldLow, storage.FieldHigh:
		zero = zero && !dates
	case storage.FieldNumLow, storage.FieldNumHigh, storage.FieldNum:
		zero = zero && !nums
	}
	if zero {
		return bson.D{{Key: "$or", Value: bson.A{cond, bson.D{{Key: path, Value: bson.D{{Key: "$exists", Value: false}}}}}}}, nil
	}
	return cond, nil
}

// Sorting, with the semantics pinned by storagetest: string Text, token
// Code, uri Exact, reference "Type/id" or URL, date Low ascending and High
// descending, number and quantity Num; missing values last either way.

func checkSort(s storage.Sort) error {
	switch s.Kind {
	case storage.KindString, storage.KindToken, storage.KindURI, storage.KindReference,
		storage.KindDate, storage.KindNumber, storage.KindQuantity:
		return nil
	}
	return fmt.Errorf("mongo: sort by %s of kind %s: %w", s.Param, s.Kind, storage.ErrUnsupported)
}

func sortKeyOf(sorts []storage.Sort, entries []storage.Entry) []sortVal {
	if len(sorts) == 0 {
		return nil
	}
	out := make([]sortVal, len(sorts))
	for i, s := range sorts {
		for j := range entries {
			e := &entries[j]
			if e.Param != s.Param || e.Kind != s.Kind {
				continue
			}
			v := valueOf(s, e)
			if !out[i].Has {
				out[i] = v
				continue
			}
			// Ascending keeps the lowest value, descending the highest.
			if c := compareVal(s.Kind, v, out[i]); (c < 0 && !s.Desc) || (c > 0 && s.Desc) {
				out[i] = v
			}
		}
	}
	return out
}

func valueOf(s storage.Sort, e *storage.Entry) sortVal {
	switch s.Kind {
	case storage.KindString:
		return sortVal{Has: true, S: e.Text}
	case storage.KindToken:
		return sortVal{Has: true, S: e.Code}
	case storage.KindURI:
		return sortVal{Has: true, S: e.Exact}
	case storage.KindReference:
		if e.RefType != "" {
			return sortVal{Has: true, S: e.RefType + "/" + e.RefID}
		}
		return sortVal{Has: true, S: e.RefURL}
	case storage.KindDate:
		if s.Desc {
			return sortVal{Has: true, I: e.High}
		}
		return sortVal{Has: true, I: e.Low}
	default:
		return sortVal{Has: true, N: e.Num}
	}
}

func compareVal(k storage.Kind, a, b sortVal) int {
	switch k {
	case storage.KindDate:
		return cmp.Compare(a.I, b.I)
	case storage.KindNumber, storage.KindQuantity:
		return cmp.Compare(a.N, b.N)
	}
	return strings.Compare(a.S, b.S)
}

// compareCand orders two candidates: sort keys (missing last), then
// "Type/id", which orders like type then id.
func compareCand(sorts []storage.Sort, ak []sortVal, aid string, bk []sortVal, bid string) int {
	for i, s := range sorts {
		a, b := ak[i], bk[i]
		switch {
		case !a.Has && !b.Has:
			continue
		case !a.Has:
			return 1
		case !b.Has:
			return -1
		}
		c := compareVal(s.Kind, a, b)
		if s.Desc {
			c = -c
		}
		if c != 0 {
			return c
		}
	}
	return strings.Compare(aid, bid)
}
