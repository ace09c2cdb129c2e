package fhir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Search is one pipeline for the three places a search can be asked
// (type, system with _type, compartment): a scope says which types and
// which extra restriction apply, parseSearch turns parameters into storage
// expressions (chains, _has, :in, _list included), the backend pages, and
// the fhir layer adds includes and shapes entries (_summary, _elements).
//
// Authorization composes with the query rather than filtering afterwards,
// so that neither results, totals, chains nor _has reveal what the caller
// may not read: the Decision.Filter of every type a search touches is
// ANDed into the expression that selects that type.

// searchScope is where a search runs.
type searchScope struct {
	// path is the request path under the FHIR base, for links and cursor binding.
	path string
	// types are the resource types searched; for a system search without
	// _type, every type the caller may search.
	types []string
	// restrict, per type, is ANDed to the query for that type (compartment
	// membership); nil means no restriction.
	restrict map[string]storage.Expr
}

// searchRequest is a parsed search.
type searchRequest struct {
	Filters []storage.Expr
	Sort    []storage.Sort
	Count   int
	Total   bool
	Cursor  string
	// Includes are the _include and _revinclude directives.
	Includes []includeSpec
	// Summary is the _summary mode ("" when absent; "count" is turned
	// into Count=0 and never reaches the shaping step).
	Summary string
	// Elements lists the _elements names.
	Elements []string
	// Kept holds the parameters that were applied, as they go in links.
	Kept url.Values
}

// typeDecision is the authorization of searching one type.
type typeDecision struct {
	allowed bool
	filter  storage.Expr
}

// searchDecisions asks the decision point once per type of a search
// (and of its chains and includes). Refusal is an error only when the
// client named that single type; types of a wide system search the caller
// cannot see are simply left out.
type searchDecisions struct {
	s     *Server
	cache map[string]typeDecision
}

func (s *Server) newSearchDecisions() *searchDecisions {
	return &searchDecisions{s: s, cache: map[string]typeDecision{}}
}

func (d *searchDecisions) get(ctx context.Context, typ string) (typeDecision, error) {
	if td, ok := d.cache[typ]; ok {
		return td, nil
	}
	td := typeDecision{allowed: true}
	if d.s.authz != nil {
		dec, err := d.s.authz.Decide(ctx, ActionSearch, typ)
		if err != nil {
			return td, fmt.Errorf("authorizing search on %s: %w", typ, err)
		}
		td = typeDecision{allowed: dec.Allowed, filter: dec.Filter}
	}
	d.cache[typ] = td
	return td, nil
}

// require is get for a type the client named: refusal is a 403.
func (d *searchDecisions) require(ctx context.Context, typ string) (storage.Expr, error) {
	td, err := d.get(ctx, typ)
	if err != nil {
		return nil, err
	}
	if !td.allowed {
		return nil, newError(http.StatusForbidden, codeForbidden, "search %s: access denied", typ)
	}
	return td.filter, nil
}

// SearchType is the search-type interaction (GET [type]?params).
func (s *Server) SearchType(ctx context.Context, r ReadRequest) (ReadResult, error) {
	typ := r.Param("type")
	if !conformance.IsResourceType(typ) {
		return ReadResult{}, errNotFound("unknown resource type %q", typ)
	}
	b, err := s.searchBundle(ctx, searchScope{path: "/" + typ, types: []string{typ}}, r.Query, r.Strict)
	if err != nil {
		return ReadResult{}, err
	}
	return resourceResult(b)
}

// searchBundle runs a search and returns its searchset Bundle; strict is
// Prefer: handling=strict.
func (s *Server) searchBundle(ctx context.Context, sc searchScope, params url.Values, strict bool) (map[string]any, error) {
	decs := s.newSearchDecisions()
	// Per-type selection: authorization AND scope restriction.
	var types []string
	perType := map[string]storage.Expr{}
	for _, t := range sc.types {
		var f storage.Expr
		if len(sc.types) == 1 {
			var err error
			if f, err = decs.require(ctx, t); err != nil {
				return nil, err
			}
		} else {
			td, err := decs.get(ctx, t)
			if err != nil {
				return nil, err
			}
			if !td.allowed {
				continue
			}
			f = td.filter
		}
		perType[t] = and(f, sc.restrict[t])
		types = append(types, t)
	}
	if len(types) == 0 {
		return nil, newError(http.StatusForbidden, codeForbidden, "search: access denied to every requested type")
	}
	v, req, err := s.compileViewSearch(ctx, decs, types, params, strict)
	if err != nil {
		return nil, err
	}
	query := canonicalQuery(req.Kept)
	binding := "search " + sc.path + "?" + query
	stack, err := s.openPageStack(binding, params.Get(cursorParam))
	if err != nil {
		return nil, err
	}
	if n := len(stack.Positions); n > 0 {
		req.Cursor = stack.Positions[n-1]
	}
	filters := slices.Clone(req.Filters)
	// When every type has the same selection it goes into the query as is;
	// otherwise the query carries their union (a superset) and each record
	// is checked against its own type's selection below. The total is then
	// withheld: it would count records the caller cannot see.
	var post map[string]storage.Expr
	common, same := sameExpr(perType, types)
	if same {
		if common != nil {
			filters = append(filters, common)
		}
	} else {
		var alts []storage.Expr
		seen := map[string]bool{}
		for _, t := range types {
			e := perType[t]
			if e == nil {
				e = storage.And{}
			}
			if k := e.String(); !seen[k] {
				seen[k] = true
				alts = append(alts, e)
			}
		}
		filters = append(filters, storage.Or{Exprs: alts})
		post = perType
	}
	qTypes := types
	if sc.path == "" && params.Get("_type") == "" && len(types) == len(sc.types) {
		qTypes = nil // every type: let the backend skip the type condition
	}
	page, err := s.backend.Search(ctx, storage.Query{
		Types: qTypes, Filter: and(filters...), Sort: req.Sort,
		Count: req.Count, Cursor: req.Cursor, Total: req.Total && post == nil,
	})
	if err != nil {
		if errors.Is(err, storage.ErrUnsupported) {
			return nil, newError(http.StatusBadRequest, codeNotSupp, "search %s: this database cannot evaluate the query: %v", sc.path, err)
		}
		return nil, fmt.Errorf("search %s: %w", sc.path, err)
	}
	matches := page.Records
	if post != nil {
		matches, err = s.postFilter(matches, post)
		if err != nil {
			return nil, err
		}
	}
	included, err := s.includes(ctx, decs, matches, req.Includes)
	if err != nil {
		return nil, err
	}
	b := newBundle("searchset", s.searchLinks(sc.path, binding, query, stack, page.Next))
	switch {
	case req.Total && page.Total >= 0 && post == nil:
		b["total"] = page.Total
	case req.Total && post != nil:
		total, err := s.countBySelection(ctx, types, req.Filters, post)
		if err != nil {
			return nil, err
		}
		b["total"] = total
	}
	if err := s.addSearchEntries(ctx, v, req.shaping(), b, matches, included); err != nil {
		return nil, fmt.Errorf("search %s: %w", sc.path, err)
	}
	return b, nil
}

// addSearchEntries adds to searchset b the matches and then the included
// resources, each passed through the output filter (shaped, then under
// view v, which records what it derives in one write: deferOutput).
func (s *Server) addSearchEntries(ctx context.Context, v View, shape shaping, b map[string]any, matches, included []storage.Record) error {
	ectx, flush := deferOutput(ctx, v)
	for _, group := range []struct {
		recs []storage.Record
		mode string
	}{{matches, "match"}, {included, "include"}} {
		for _, rec := range group.recs {
			raw, id, err := s.emit(ectx, v, shape, rec)
			if err != nil {
				return err
			}
			addEntry(b, map[string]any{
				"fullUrl":  s.resourceURL(rec.Type, id),
				"resource": json.RawMessage(raw),
				"search":   map[string]any{"mode": group.mode},
			})
		}
	}
	if err := flush(ctx); err != nil {
		return fmt.Errorf("recording what the output view derived: %w", err)
	}
	return nil
}

// postFilter keeps the records inside their type's selection, checked on
// their index entries with the storage package's reference semantics.
func (s *Server) postFilter(recs []storage.Record, perType map[string]storage.Expr) ([]storage.Record, error) {
	out := recs[:0:0]
	for _, rec := range recs {
		e, ok := perType[rec.Type]
		if !ok {
			continue
		}
		if e != nil {
			res, err := decodeRecord(rec)
			if err != nil {
				return nil, err
			}
			entries, err := s.registry.Index(rec.Type, res)
			if err != nil {
				return nil, fmt.Errorf("indexing %s/%s: %w", rec.Type, rec.ID, err)
			}
			ok, err := storage.Matches(e, rec.ID, entries)
			if err != nil {
				return nil, fmt.Errorf("checking %s/%s against its selection: %w", rec.Type, rec.ID, err)
			}
			if !ok {
				continue
			}
		}
		out = append(out, rec)
	}
	return out, nil
}

// sameExpr reports whether every type has the same selection, and returns it.
// countBySelection counts the matches of a search whose types have
// different authorization selections: one count per group of types sharing
// a selection, so the total counts exactly what the caller may see.
func (s *Server) countBySelection(ctx context.Context, types []string, filters []storage.Expr, perType map[string]storage.Expr) (int64, error) {
	groups := map[string][]string{}
	var order []string
	for _, t := range types {
		k := "nil"
		if e := perType[t]; e != nil {
			k = e.String()
		}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], t)
	}
	var total int64
	for _, k := range order {
		ts := groups[k]
		page, err := s.backend.Search(ctx, storage.Query{
			Types: ts, Filter: and(append(slices.Clone(filters), perType[ts[0]])...), Total: true,
		})
		if err != nil {
			return 0, fmt.Errorf("counting %v: %w", ts, err)
		}
		total += page.Total
	}
	return total, nil
}

func sameExpr(m map[string]storage.Expr, types []string) (storage.Expr, bool) {
	first := m[types[0]]
	for _, t := range types[1:] {
		e := m[t]
		if (e == nil) != (first == nil) || e != nil && e.String() != first.String() {
			return nil, false
		}
	}
	return first, true
}

// and conjoins the non-nil expressions; nil when there are none.
func and(es ...storage.Expr) storage.Expr {
	var out []storage.Expr
	for _, e := range es {
		if e != nil {
			out = append(out, e)
		}
	}
	switch len(out) {
	case 0:
		return nil
	case 1:
		return out[0]
	}
	return storage.And{Exprs: out}
}

// compileViewSearch compiles params, in the caller's view's terms, as
// compileSearch does: the view maps them to stored terms first, and the
// kept parameters (the self link's) are given back in the caller's terms.
func (s *Server) compileViewSearch(ctx context.Context, decs *searchDecisions, types []string, params url.Values, strict bool) (View, searchRequest, error) {
	v, err := s.view(ctx)
	if err != nil {
		return nil, searchRequest{}, err
	}
	stored, err := viewSearch(ctx, v, types, params)
	if err != nil {
		return nil, searchRequest{}, err
	}
	req, err := s.compileSearch(ctx, decs, types, stored, strict)
	if err != nil {
		return nil, searchRequest{}, err
	}
	if v != nil {
		restoreKept(req.Kept, params)
	}
	return v, req, nil
}

// compileSearch compiles the parameters of a search over types. Unknown or
// unsupported parameters are dropped (and so absent from the self link,
// which is how FHIR tells the client they were ignored), or rejected with
// 400 under Prefer: handling=strict. Malformed values are always 400.
func (s *Server) compileSearch(ctx context.Context, decs *searchDecisions, types []string, params url.Values, strict bool) (searchRequest, error) {
	req := searchRequest{Count: defaultCount, Kept: url.Values{}}
	ignore := func(name, why string) error {
		if strict {
			return errBadRequest("search parameter %q: %s", name, why)
		}
		return nil
	}
	// Sorted names make error messages and compile order deterministic.
	names := make([]string, 0, len(params))
	for name := range params {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		values := params[name]
		switch name {
		case cursorParam, "_format", "_pretty":
			continue
		case "_type":
			if len(types) > 0 {
				req.Kept[name] = values
			}
			continue
		case "_count":
			n, err := countParam(params)
			if err != nil {
				return req, err
			}
			req.Count = n
			if n == 0 {
				req.Total = true
			}
			req.Kept.Set(name, params.Get(name))
			continue
		case "_total":
			switch v := params.Get(name); v {
			case "none":
			case "accurate", "estimate":
				req.Total = true
			default:
				return req, errBadRequest("_total must be none, estimate or accurate, not %q", v)
			}
			req.Kept.Set(name, params.Get(name))
			continue
		case "_summary":
			switch v := params.Get(name); v {
			case "count":
				req.Count, req.Total = 0, true
			case "true", "text", "data":
				req.Summary = v
			case "false":
			default:
				return req, errBadRequest("_summary must be true, text, data, count or false, not %q", v)
			}
			req.Kept.Set(name, params.Get(name))
			continue
		case "_elements":
			for _, v := range values {
				for _, e := range strings.Split(v, ",") {
					if e = strings.TrimSpace(e); e != "" {
						req.Elements = append(req.Elements, e)
					}
				}
			}
			req.Kept[name] = values
			continue
		case "_sort":
			sorts, err := s.parseSort(types, params.Get(name))
			if err != nil {
				if strict {
					return req, errBadRequest("%v", err)
				}
				continue
			}
			req.Sort = sorts
			req.Kept.Set(name, params.Get(name))
			continue
		case "_include", "_revinclude", "_include:iterate", "_revinclude:iterate", "_include:recurse", "_revinclude:recurse":
			for _, v := range values {
				spec, err := s.parseInclude(name, v, types)
				if err != nil {
					return req, err
				}
				req.Includes = append(req.Includes, spec)
			}
			req.Kept[name] = values
			continue
		}
		e, err := s.compileForTypes(ctx, decs, types, name, values)
		if err != nil {
			var ig *ignored
			if errors.As(err, &ig) {
				if err := ignore(name, ig.why); err != nil {
					return req, err
				}
				continue
			}
			return req, err
		}
		req.Filters = append(req.Filters, e)
		req.Kept[name] = values
	}
	return req, nil
}

// ignored marks a parameter the server does not understand or support
// (as opposed to a malformed value): dropped, or 400 when strict.
type ignored struct{ why string }

func (e *ignored) Error() string { return e.why }

// compileForTypes compiles one parameter for every searched type. A
// multi-type search needs the parameter to mean the same on each type
// (search.html#return: common parameters), which is checked on the
// compiled expressions.
func (s *Server) compileForTypes(ctx context.Context, decs *searchDecisions, types []string, name string, values []string) (storage.Expr, error) {
	var first storage.Expr
	for i, t := range types {
		e, err := s.compileParam(ctx, decs, t, name, values, 0)
		if err != nil {
			if len(types) > 1 {
				var ig *ignored
				if errors.As(err, &ig) {
					return nil, &ignored{why: "not a parameter common to every searched type (" + t + ": " + ig.why + ")"}
				}
			}
			return nil, err
		}
		if i == 0 {
			first = e
		} else if e.String() != first.String() {
			return nil, &ignored{why: "its meaning differs between the searched types"}
		}
	}
	return first, nil
}

// parseSort reads _sort=a,-b (search.html#sort).
func (s *Server) parseSort(types []string, v string) ([]storage.Sort, error) {
	var out []storage.Sort
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		desc := strings.HasPrefix(f, "-")
		code := strings.TrimPrefix(f, "-")
		var kind storage.Kind
		for _, t := range types {
			p, ok := s.registry.Param(t, code)
			if !ok || p.Type == 0 || p.Type == storage.KindComposite || kind != 0 && p.Type != kind {
				return nil, fmt.Errorf("_sort: %q is not a sortable parameter of %s", code, t)
			}
			kind = p.Type
		}
		out = append(out, storage.Sort{Param: code, Kind: kind, Desc: desc})
	}
	return out, nil
}
