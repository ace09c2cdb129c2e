package fhir

import (
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Observation/$lastn (observation-operation-lastn.html): the most recent
// max Observations per code among those an Observation search with the
// same parameters selects. It is a search in every other respect: the
// caller's Decision.Filter is ANDed into every query it makes, the
// parameters compile through compileSearch, and every resource leaves
// through Server.emit.
//
// Grouping follows the operation's rules: codings are equal when system
// and code are; an Observation with several codings joins the groups of
// all of them (transitively); an Observation with no coded coding groups
// by its code.text as written. Within a group the order is the "date"
// parameter descending (the backend's sort, so the same order a _sort=-date
// search gives), and an Observation whose effective time ties the max-th
// is returned too.
//
// Two strategies give the same answer. When there are at most lastnProbe
// matches, they are read (pages of 1000) and grouped in memory: few
// queries, which is also what a backend that scans (FerretDB) does best. Otherwise the groups are found
// by seeking: the newest match outside the groups found so far starts a
// group, the group's codings are closed under translation one query at a
// time, and its newest max are one sorted, limited query; each of these is
// answered from the indexes (SQLite), so the cost grows with the number of
// groups, not with the number of Observations.

//go:embed lastn_operation.json
var lastnDefinitionJSON []byte

// lastnDefinition is the R4 OperationDefinition Observation-lastn (as
// published in the specification, narrative left out), parsed once.
var lastnDefinition = sync.OnceValues(func() (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(lastnDefinitionJSON, &m); err != nil {
		return nil, fmt.Errorf("embedded lastn_operation.json: %w", err)
	}
	return m, nil
})

const (
	// lastnDefaultProbe is the most matches grouped in memory (read in
	// pages); more are grouped by seeking. Measured by BenchmarkLastN:
	// grouping 2,000 Observations in memory costs less than seeking them.
	lastnDefaultProbe = 5000
	// lastnMaxPerGroup bounds the max parameter.
	lastnMaxPerGroup = 1000
	// lastnMaxGroups bounds the groups one request may produce.
	lastnMaxGroups = 500
	// lastnMaxRecords bounds what one request reads in all.
	lastnMaxRecords = 5000
)

// lastnSubjectParams and lastnCodeParams are the parameters the operation
// requires one of each (a subject; a category or a parameter on code).
var (
	lastnSubjectParams = []string{"patient", "subject"}
	lastnCodeParams    = []string{"category", "code", "code-value-concept", "code-value-date", "code-value-quantity", "code-value-string",
		"combo-code", "combo-code-value-concept", "combo-code-value-quantity"}
)

// LastN is the $lastn interaction over the parameters in r.Query, as
// the REST handler and a batch or transaction GET entry run it.
func (s *Server) LastN(ctx context.Context, r ReadRequest) (ReadResult, error) {
	b, err := s.lastnBundle(ctx, r.Query, r.Strict)
	if err != nil {
		return ReadResult{}, err
	}
	return resourceResult(b)
}

// lastnBundle answers $lastn with its searchset Bundle; params is left
// as the caller gave it.
func (s *Server) lastnBundle(ctx context.Context, params url.Values, strict bool) (map[string]any, error) {
	params = maps.Clone(params)
	maxN := 1
	if vs, ok := params["max"]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(vs[len(vs)-1]))
		if err != nil || n < 1 {
			return nil, errBadRequest("$lastn: max must be a positive integer, not %q", vs[len(vs)-1])
		}
		if n > lastnMaxPerGroup {
			return nil, errBadRequest("$lastn: max is at most %d", lastnMaxPerGroup)
		}
		maxN = n
		delete(params, "max")
	}
	for _, p := range []string{"_sort", "_count", "_total", cursorParam} {
		if _, ok := params[p]; ok {
			return nil, errBadRequest("$lastn: %s does not apply (the operation orders by effective time and answers in one Bundle)", p)
		}
	}
	if !hasParam(params, lastnSubjectParams) {
		return nil, errBadRequest("$lastn needs the subject: a patient or subject parameter")
	}
	for _, name := range lastnSubjectParams {
		if vs := params[name]; len(vs) > 1 || len(vs) == 1 && strings.Contains(vs[0], ",") {
			return nil, errBadRequest("$lastn takes one subject per request (%s has several)", name)
		}
	}
	if !hasParam(params, lastnCodeParams) {
		return nil, errBadRequest("$lastn needs a category parameter or a parameter on code (code, code-value-concept, ...)")
	}
	decs := s.newSearchDecisions()
	authF, err := decs.require(ctx, "Observation")
	if err != nil {
		return nil, err
	}
	v, req, err := s.compileViewSearch(ctx, decs, []string{"Observation"}, params, strict)
	if err != nil {
		return nil, err
	}
	// A required parameter the server could not use (unknown modifier)
	// would silently widen the operation to every subject or code.
	if !hasParam(req.Kept, lastnSubjectParams) || !hasParam(req.Kept, lastnCodeParams) {
		return nil, errBadRequest("$lastn: the subject and category/code parameters must be ones this server supports")
	}
	groups, err := s.lastnGroups(ctx, and(append(slices.Clone(req.Filters), authF)...), maxN)
	if err != nil {
		return nil, err
	}
	var matches []storage.Record
	for _, g := range groups {
		matches = append(matches, g...)
	}
	kept := req.Kept
	if maxN != 1 {
		kept.Set("max", strconv.Itoa(maxN))
	}
	b := newBundle("searchset", []any{map[string]any{"relation": "self", "url": s.base + "/Observation/$lastn?" + canonicalQuery(kept)}})
	b["total"] = len(matches)
	if req.Count == 0 && req.Total {
		return b, nil // _summary=count
	}
	included, err := s.includes(ctx, decs, matches, req.Includes)
	if err != nil {
		return nil, err
	}
	if err := s.addSearchEntries(ctx, v, req.shaping(), b, matches, included); err != nil {
		return nil, fmt.Errorf("$lastn: %w", err)
	}
	return b, nil
}

// hasParam reports whether params holds one of names, with or without a modifier.
func hasParam(params url.Values, names []string) bool {
	for k, vs := range params {
		name, _, _ := strings.Cut(k, ":")
		if slices.Contains(names, name) && len(vs) > 0 {
			return true
		}
	}
	return false
}

// ParametersQuery is the query string query plus the parameters of
// Parameters resource res (a POSTed operation's body, or a batch entry's
// resource), in the forms operationParams describes.
func ParametersQuery(op string, query url.Values, res map[string]any) (url.Values, error) {
	if res["resourceType"] != "Parameters" {
		return nil, errBadRequest("%s body must be a Parameters resource", op)
	}
	out := url.Values{}
	for k, vs := range query {
		out[k] = append(out[k], vs...)
	}
	list, _ := res["parameter"].([]any)
	for i, p := range list {
		pm, _ := p.(map[string]any)
		name, _ := pm["name"].(string)
		var val string
		found := 0
		for k, v := range pm {
			if !strings.HasPrefix(k, "value") {
				continue
			}
			found++
			var ok bool
			if val, ok = operationValue(k, v); !ok {
				return nil, errBadRequest("%s body: parameter[%d] (%s): %s is not a value this operation takes", op, i, name, k)
			}
		}
		if name == "" || found != 1 {
			return nil, errBadRequest("%s body: parameter[%d] needs a name and one value", op, i)
		}
		out[name] = append(out[name], val)
	}
	return out, nil
}

// operationValue is the query-string form of one Parameters value.
func operationValue(key string, v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		return strconv.FormatBool(x), true
	}
	m, ok := v.(map[string]any)
	if !ok {
		return "", false
	}
	str := func(k string) (string, bool) {
		s, ok := m[k].(string)
		return s, ok || m[k] == nil
	}
	switch key {
	case "valueCoding":
		system, ok1 := str("system")
		code, ok2 := str("code")
		return system + "|" + code, ok1 && ok2 && code != ""
	case "valuePeriod":
		start, ok1 := str("start")
		end, ok2 := str("end")
		return start + "/" + end, ok1 && ok2 && start+end != ""
	case "valueReference":
		ref, ok := str("reference")
		return ref, ok && ref != ""
	}
	return "", false
}

// lastnGroups returns the groups, newest first, each newest first.
func (s *Server) lastnGroups(ctx context.Context, base storage.Expr, maxN int) ([][]storage.Record, error) {
	keys := newLastnKeys(s)
	probe := s.lastnProbe
	if probe <= 0 {
		probe = lastnDefaultProbe
	}
	// The first page also asks for the number of matches, which decides
	// the strategy; a backend that cannot count is read up to the bound.
	q := storage.Query{Filter: base, Count: min(probe, 1000), Total: true}
	var recs []storage.Record
	seek := false
	for {
		page, err := s.lastnSearch(ctx, q)
		if err != nil {
			return nil, err
		}
		recs = append(recs, page.Records...)
		if q.Total && page.Total > int64(probe) || len(recs) > probe {
			seek = true
			break
		}
		if page.Next == "" {
			break
		}
		q.Cursor, q.Total = page.Next, false
	}
	var groups [][]storage.Record
	var err error
	if !seek {
		if groups, err = keys.groupInMemory(recs, maxN); err != nil {
			return nil, err
		}
	} else if groups, err = s.lastnSeek(ctx, keys, base, maxN); err != nil {
		return nil, err
	}
	if err := keys.orderGroups(groups); err != nil {
		return nil, err
	}
	return groups, nil
}

var lastnSort = []storage.Sort{{Param: "date", Kind: storage.KindDate, Desc: true}}

func (s *Server) lastnSearch(ctx context.Context, q storage.Query) (storage.Page, error) {
	q.Types = []string{"Observation"}
	if q.Sort == nil {
		q.Sort = lastnSort
	}
	page, err := s.backend.Search(ctx, q)
	if err != nil {
		if errors.Is(err, storage.ErrUnsupported) {
			return page, newError(http.StatusBadRequest, codeNotSupp, "$lastn: this database cannot evaluate the query: %v", err)
		}
		return page, fmt.Errorf("$lastn: %w", err)
	}
	return page, nil
}

// lastnSeek finds the groups with index-answered queries (see the top of
// the file): per group one query for its newest match, one per coding its
// translations add, and one (or a few, for ties) for its newest max.
func (s *Server) lastnSeek(ctx context.Context, keys *lastnKeys, base storage.Expr, maxN int) ([][]storage.Record, error) {
	coded := storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpGt, Value: ""}}
	var groups [][]storage.Record
	var known []lastnCoding
	uncodedDone := false
	read := 0
	for {
		if len(groups) >= lastnMaxGroups {
			return nil, newError(http.StatusRequestEntityTooLarge, codeTooCostly, "$lastn: more than %d codes match; narrow the query with category or code", lastnMaxGroups)
		}
		f := []storage.Expr{base}
		if len(known) > 0 {
			f = append(f, storage.Not{Expr: codingMatch(known)})
		}
		if uncodedDone {
			f = append(f, coded)
		}
		page, err := s.lastnSearch(ctx, storage.Query{Filter: and(f...), Count: 1})
		if err != nil {
			return nil, err
		}
		if len(page.Records) == 0 {
			return groups, nil
		}
		head := page.Records[0]
		set, err := keys.codings(head)
		if err != nil {
			return nil, err
		}
		if len(set) == 0 {
			// Observations without a coded coding group by their text,
			// which the index does not hold as written: read them all.
			recs, err := s.lastnAll(ctx, and(base, storage.Not{Expr: coded}), &read)
			if err != nil {
				return nil, err
			}
			gs, err := keys.groupInMemory(recs, maxN)
			if err != nil {
				return nil, err
			}
			groups = append(groups, gs...)
			uncodedDone = true
			continue
		}
		// Close the group's codings under translation: an Observation
		// that has one of them and another one brings the other in.
		for {
			other := storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.And{Exprs: []storage.Expr{
				storage.Cmp{Field: storage.FieldCode, Op: storage.OpGt, Value: ""},
				storage.Not{Expr: codingCond(set)},
			}}}
			// Any one will do: no sort (the cheapest order).
			page, err := s.lastnSearch(ctx, storage.Query{Filter: and(base, codingMatch(set), other), Count: 1, Sort: []storage.Sort{}})
			if err != nil {
				return nil, err
			}
			if len(page.Records) == 0 {
				break
			}
			more, err := keys.codings(page.Records[0])
			if err != nil {
				return nil, err
			}
			n := len(set)
			for _, c := range more {
				if !slices.Contains(set, c) {
					set = append(set, c)
				}
			}
			if len(set) == n {
				return nil, fmt.Errorf("$lastn: Observation/%s matched a coding outside %v but brought none", page.Records[0].ID, set)
			}
		}
		top, err := s.lastnTop(ctx, keys, and(base, codingMatch(set)), maxN, &read)
		if err != nil {
			return nil, err
		}
		groups = append(groups, top)
		known = append(known, set...)
	}
}

// lastnTop reads the newest maxN matches of f, and those tied with the last.
func (s *Server) lastnTop(ctx context.Context, keys *lastnKeys, f storage.Expr, maxN int, read *int) ([]storage.Record, error) {
	q := storage.Query{Filter: f, Count: maxN + 1}
	var out []storage.Record
	var edge int64
	for {
		page, err := s.lastnSearch(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, rec := range page.Records {
			t, err := keys.effective(rec)
			if err != nil {
				return nil, err
			}
			if len(out) >= maxN && t != edge {
				return out, nil
			}
			out = append(out, rec)
			edge = t
			if *read++; *read > lastnMaxRecords {
				return nil, lastnTooMany()
			}
		}
		if page.Next == "" {
			return out, nil
		}
		q.Cursor, q.Count = page.Next, 50
	}
}

// lastnAll reads every match of f.
func (s *Server) lastnAll(ctx context.Context, f storage.Expr, read *int) ([]storage.Record, error) {
	q := storage.Query{Filter: f, Count: 500}
	var out []storage.Record
	for {
		page, err := s.lastnSearch(ctx, q)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Records...)
		if *read += len(page.Records); *read > lastnMaxRecords {
			return nil, lastnTooMany()
		}
		if page.Next == "" {
			return out, nil
		}
		q.Cursor = page.Next
	}
}

func lastnTooMany() error {
	return newError(http.StatusRequestEntityTooLarge, codeTooCostly, "$lastn would read more than %d Observations; narrow the query", lastnMaxRecords)
}

// lastnCoding is a coding as grouping compares it: system and code.
type lastnCoding struct{ system, code string }

// codingCond holds for a code index entry equal to one of set.
func codingCond(set []lastnCoding) storage.Expr {
	alts := make([]storage.Expr, len(set))
	for i, c := range set {
		alts[i] = storage.And{Exprs: []storage.Expr{
			storage.Cmp{Field: storage.FieldSystem, Op: storage.OpEq, Value: c.system},
			storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: c.code},
		}}
	}
	return storage.Or{Exprs: alts}
}

// codingMatch holds for an Observation with a coding in set.
func codingMatch(set []lastnCoding) storage.Expr {
	return storage.Match{Param: "code", Kind: storage.KindToken, Cond: codingCond(set)}
}

// lastnKeys derives, once per record, what grouping and ordering need:
// the codings as the token index holds them, and, only where a tie or the
// order of groups needs it, the "date" value the backend sorts by.
type lastnKeys struct {
	s    *Server
	memo map[string]*lastnKey
}

type lastnKey struct {
	res     map[string]any
	codings []lastnCoding
	text    string // code.text as written, for an Observation without codings
	eff     int64  // the highest "date" value, the descending sort key
	effDone bool
}

func newLastnKeys(s *Server) *lastnKeys { return &lastnKeys{s: s, memo: map[string]*lastnKey{}} }

func (k *lastnKeys) key(rec storage.Record) (*lastnKey, error) {
	if v, ok := k.memo[rec.ID]; ok {
		return v, nil
	}
	res, err := decodeRecord(rec)
	if err != nil {
		return nil, err
	}
	v := &lastnKey{res: res}
	// System and code as written; a coding without a code is not one to
	// group by (resources/token.go indexes the same).
	code, _ := res["code"].(map[string]any)
	codings, _ := code["coding"].([]any)
	for _, c := range codings {
		m, _ := c.(map[string]any)
		sys, _ := m["system"].(string)
		val, _ := m["code"].(string)
		if val != "" && !slices.Contains(v.codings, lastnCoding{sys, val}) {
			v.codings = append(v.codings, lastnCoding{sys, val})
		}
	}
	v.text, _ = code["text"].(string)
	k.memo[rec.ID] = v
	return v, nil
}

func (k *lastnKeys) codings(rec storage.Record) ([]lastnCoding, error) {
	v, err := k.key(rec)
	if err != nil {
		return nil, err
	}
	return slices.Clone(v.codings), nil
}

// effective is the record's sort key: the highest value of its "date"
// index entries (storage.MinDate without one), from the registry, so that
// it is exactly what the backend sorted by. Indexing only effective[x]
// costs a fraction of the whole resource.
func (k *lastnKeys) effective(rec storage.Record) (int64, error) {
	v, err := k.key(rec)
	if err != nil {
		return 0, err
	}
	if v.effDone {
		return v.eff, nil
	}
	part := map[string]any{"resourceType": rec.Type, "id": rec.ID}
	for key, val := range v.res {
		if strings.HasPrefix(key, "effective") {
			part[key] = val
		}
	}
	entries, err := k.s.registry.Index(rec.Type, part)
	if err != nil {
		return 0, fmt.Errorf("indexing %s/%s: %w", rec.Type, rec.ID, err)
	}
	v.eff = storage.MinDate
	seen := false
	for _, e := range entries {
		if e.Param == "date" && e.Kind == storage.KindDate && (!seen || e.High > v.eff) {
			v.eff, seen = e.High, true
		}
	}
	v.effDone = true
	return v.eff, nil
}

// groupInMemory groups records that arrive in the backend's date-descending
// order (union-find over codings; uncoded ones by text) and keeps each
// group's newest maxN and the ties of the last.
func (k *lastnKeys) groupInMemory(recs []storage.Record, maxN int) ([][]storage.Record, error) {
	parent := map[string]string{}
	var find func(string) string
	find = func(x string) string {
		p, ok := parent[x]
		if !ok || p == x {
			parent[x] = x
			return x
		}
		r := find(p)
		parent[x] = r
		return r
	}
	first := make([]string, len(recs)) // a group label per record
	for i, rec := range recs {
		v, err := k.key(rec)
		if err != nil {
			return nil, err
		}
		if len(v.codings) == 0 {
			first[i] = "text\x00" + v.text
			find(first[i])
			continue
		}
		first[i] = "coding\x00" + v.codings[0].system + "\x00" + v.codings[0].code
		for _, c := range v.codings[1:] {
			a, b := find(first[i]), find("coding\x00"+c.system+"\x00"+c.code)
			if a != b {
				parent[b] = a
			}
		}
	}
	index := map[string]int{}
	var groups [][]storage.Record
	for i, rec := range recs {
		root := find(first[i])
		gi, ok := index[root]
		if !ok {
			gi = len(groups)
			index[root] = gi
			groups = append(groups, nil)
		}
		groups[gi] = append(groups[gi], rec)
	}
	for gi, g := range groups {
		n := min(maxN, len(g))
		if n < len(g) {
			edge, err := k.effective(g[n-1])
			if err != nil {
				return nil, err
			}
			for n < len(g) {
				t, err := k.effective(g[n])
				if err != nil {
					return nil, err
				}
				if t != edge {
					break
				}
				n++
			}
		}
		groups[gi] = g[:n]
	}
	return groups, nil
}

// orderGroups puts the groups newest first (by their newest member, then
// its id), so that both strategies answer in the same order.
func (k *lastnKeys) orderGroups(groups [][]storage.Record) error {
	for _, g := range groups {
		if _, err := k.effective(g[0]); err != nil {
			return err
		}
	}
	slices.SortStableFunc(groups, func(a, b []storage.Record) int {
		ta, tb := k.memo[a[0].ID].eff, k.memo[b[0].ID].eff
		if c := cmp.Compare(tb, ta); c != 0 {
			return c
		}
		return strings.Compare(a[0].ID, b[0].ID)
	})
	return nil
}
