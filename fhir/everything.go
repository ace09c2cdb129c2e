package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Patient $everything (patient-operation-everything.html): the patient,
// every resource in its compartment (the registry's CompartmentDefinition
// links), and the resources those point to (Practitioner, Organization,
// Medication, Location…), all inside the caller's authorization: a type
// the caller may not search is left out, and every record passes the
// same filter as a search or read would apply.
//
// The result set is computed whole for each page and paged by offset:
// one patient's record is small enough for that, and it keeps paging
// exact without server-side state. Populations go through Bulk $export.

const (
	// maxEverything bounds the resources one $everything may assemble.
	maxEverything = 50000
	// maxEverythingPatients bounds the type-level form (all patients the
	// caller may see); beyond it the caller is sent to $export.
	maxEverythingPatients = 100
)

type everythingOpts struct {
	start, end, since string
	types             []string // empty: every type
}

// Everything is Patient/[id]/$everything.
func (s *Server) Everything(ctx context.Context, r ReadRequest) (ReadResult, error) {
	typ, id, err := instanceOf(r)
	if err != nil {
		return ReadResult{}, err
	}
	if typ != "Patient" {
		return ReadResult{}, errNotFound("$everything is defined on Patient, not %s", typ)
	}
	d, err := s.decide(ctx, ActionRead, typ)
	if err != nil {
		return ReadResult{}, err
	}
	spoken := id
	v, err := s.view(ctx)
	if err != nil {
		return ReadResult{}, err
	}
	if id, err = s.storedID(ctx, v, typ, id); err != nil {
		return ReadResult{}, err
	}
	rec, err := s.backend.Read(ctx, typ, id)
	if errors.Is(err, storage.ErrNotFound) {
		return ReadResult{}, errNotFound("Patient/%s is not known", spoken)
	}
	if err != nil {
		return ReadResult{}, fmt.Errorf("reading Patient/%s: %w", spoken, err)
	}
	if rec.Deleted {
		if err := s.deletedWithin(ctx, d, ActionRead, rec); err != nil {
			return ReadResult{}, err
		}
		return ReadResult{}, newError(http.StatusGone, codeDeleted, "Patient/%s was deleted", spoken)
	}
	res, err := decodeRecord(rec)
	if err != nil {
		return ReadResult{}, err
	}
	if err := s.within(d, ActionRead, typ, id, res); err != nil {
		return ReadResult{}, err
	}
	return s.serveEverything(ctx, r, "/Patient/"+spoken+"/$everything", []storage.Record{rec})
}

// EverythingType is Patient/$everything.
func (s *Server) EverythingType(ctx context.Context, r ReadRequest) (ReadResult, error) {
	typ := r.Param("type")
	if !conformance.IsResourceType(typ) {
		return ReadResult{}, errNotFound("unknown resource type %q", typ)
	}
	if typ != "Patient" {
		return ReadResult{}, errNotFound("$everything is defined on Patient, not %s", typ)
	}
	d, err := s.decide(ctx, ActionSearch, typ)
	if err != nil {
		return ReadResult{}, err
	}
	page, err := s.backend.Search(ctx, storage.Query{Types: []string{typ}, Filter: d.Filter, Count: maxEverythingPatients + 1})
	if err != nil {
		return ReadResult{}, fmt.Errorf("$everything: listing patients: %w", err)
	}
	if len(page.Records) > maxEverythingPatients {
		return ReadResult{}, newError(http.StatusRequestEntityTooLarge, codeTooCostly,
			"$everything over more than %d patients: use Bulk Data $export", maxEverythingPatients)
	}
	return s.serveEverything(ctx, r, "/Patient/$everything", page.Records)
}

func (s *Server) serveEverything(ctx context.Context, r ReadRequest, path string, patients []storage.Record) (ReadResult, error) {
	q := r.Query
	var o everythingOpts
	for k := range q {
		switch k {
		case "start", "end", "_since":
			v := q.Get(k)
			if _, err := parseDateTime(v); err != nil {
				return ReadResult{}, errBadRequest("%s: %q is not a FHIR date or instant", k, v)
			}
		case "_type":
			for _, v := range q[k] {
				for _, t := range strings.Split(v, ",") {
					if !slices.Contains(s.registry.ResourceTypes(), t) {
						return ReadResult{}, errBadRequest("_type: %q is not a resource type", t)
					}
					o.types = append(o.types, t)
				}
			}
		case "_count", cursorParam, "_format", "_pretty":
		default:
			if r.Strict {
				return ReadResult{}, errBadRequest("unknown $everything parameter %q", k)
			}
			delete(q, k)
		}
	}
	o.start, o.end, o.since = q.Get("start"), q.Get("end"), q.Get("_since")
	count, err := countParam(q)
	if err != nil {
		return ReadResult{}, err
	}
	if count == 0 {
		count = defaultCount
	}
	query := canonicalQuery(q)
	binding := "everything " + path + "?" + query
	offset := 0
	if tok := q.Get(cursorParam); tok != "" {
		raw, err := s.openCursor(binding, tok)
		if err != nil {
			return ReadResult{}, err
		}
		if offset, err = strconv.Atoi(raw); err != nil || offset < 0 {
			return ReadResult{}, errBadRequest("invalid paging cursor")
		}
	}
	all, err := s.collectEverything(ctx, patients, o)
	if err != nil {
		return ReadResult{}, err
	}
	next := ""
	end := min(offset+count, len(all))
	if end < len(all) {
		next = strconv.Itoa(end)
	}
	b := newBundle("searchset", s.pageLinks(path, binding, query, next))
	b["total"] = len(all)
	v, err := s.view(ctx)
	if err != nil {
		return ReadResult{}, err
	}
	if err := s.addSearchEntries(ctx, v, nil, b, all[min(offset, len(all)):end], nil); err != nil {
		return ReadResult{}, fmt.Errorf("$everything: %w", err)
	}
	return resourceResult(b)
}

// collectEverything assembles the patients, their compartments and the
// resources those reference, each once, in that order.
func (s *Server) collectEverything(ctx context.Context, patients []storage.Record, o everythingOpts) ([]storage.Record, error) {
	wanted := func(t string) bool { return len(o.types) == 0 || slices.Contains(o.types, t) }
	seen := map[string]bool{}
	var out []storage.Record
	add := func(rec storage.Record) error {
		key := rec.Type + "/" + rec.ID
		if seen[key] {
			return nil
		}
		seen[key] = true
		if len(out) >= maxEverything {
			return newError(http.StatusRequestEntityTooLarge, codeTooCostly, "$everything exceeds %d resources: use Bulk Data $export", maxEverything)
		}
		out = append(out, rec)
		return nil
	}
	refs := make([]string, 0, len(patients))
	for _, p := range patients {
		seen["Patient/"+p.ID] = true
		refs = append(refs, "Patient/"+p.ID)
		if wanted("Patient") && (o.since == "" || !p.LastUpdated.Before(mustTime(o.since))) {
			out = append(out, p)
		}
	}
	if len(refs) == 0 {
		return out, nil
	}
	compartment, err := s.compartmentRecords(ctx, refs, o, wanted)
	if err != nil {
		return nil, err
	}
	for _, r := range compartment {
		if err := add(r.rec); err != nil {
			return nil, err
		}
	}
	// One level of referenced resources outside the compartment. Other
	// patients are never pulled in this way.
	// Each distinct reference is read once, by key: an indexed lookup on
	// every store, where a search by ids would be a scan on FerretDB.
	guard := s.newGuard(ActionRead)
	tried := map[string]bool{}
	for _, c := range compartment {
		for _, ref := range s.localRefs(c.res, nil) {
			typ, id, _ := strings.Cut(ref, "/")
			if seen[ref] || tried[ref] || typ == "Patient" || !wanted(typ) {
				continue
			}
			tried[ref] = true
			r, err := s.backend.Read(ctx, typ, id)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("$everything: reading %s: %w", ref, err)
			}
			if r.Deleted || o.since != "" && r.LastUpdated.Before(mustTime(o.since)) {
				continue
			}
			ok, err := guard.allows(ctx, r)
			if err != nil {
				return nil, err
			}
			if ok {
				if err := add(r); err != nil {
					return nil, err
				}
			}
		}
	}
	return out, nil
}

// decodedRecord is a record with its decoded resource, decoded once for
// both the compartment check and the references it holds.
type decodedRecord struct {
	rec storage.Record
	res map[string]any
}

// compartmentRecords finds the resources linked to the patients with
// one search over every compartment type (one scan on a store without
// indexes, instead of one per type), then keeps each record only if it
// satisfies its own type's selection: its type's compartment links, the
// start/end/_since bounds and the caller's filter for that type. The
// search is the union of every type's links, so the check in Go is what
// makes the result exact (a "subject" that links type A need not link B).
// The check is skipped where the union is already exact for a type, and
// reads only the parameters the type's selection names otherwise: on a
// patient with thousands of Observations, indexing each record in full
// was most of the cost. A type the caller may not search is left out.
func (s *Server) compartmentRecords(ctx context.Context, patients []string, o everythingOpts, wanted func(string) bool) ([]decodedRecord, error) {
	value := strings.Join(patients, ",")
	perType := map[string]storage.Expr{}
	union := map[string]storage.Expr{}
	linkSet := map[string]map[string]bool{}
	extra := map[string]bool{} // a selection beyond the links
	var types []string
	for _, typ := range s.registry.ResourceTypes() {
		links := s.registry.Compartment("Patient", typ)
		if typ == "Patient" || len(links) == 0 || !wanted(typ) {
			continue
		}
		d, err := s.decide(ctx, ActionSearch, typ)
		var fe *Error
		if errors.As(err, &fe) && fe.Status == http.StatusForbidden {
			continue
		}
		if err != nil {
			return nil, err
		}
		var ors []storage.Expr
		for _, code := range links {
			p, ok := s.registry.Param(typ, code)
			if !ok || p.Type != storage.KindReference {
				continue
			}
			e, err := s.registry.Compile(typ, code, "", []string{value})
			if err != nil {
				return nil, fmt.Errorf("$everything: %s.%s: %w", typ, code, err)
			}
			ors = append(ors, e)
			if linkSet[typ] == nil {
				linkSet[typ] = map[string]bool{}
			}
			linkSet[typ][code] = true
			if _, ok := union[code]; !ok {
				union[code] = e
			}
		}
		if len(ors) == 0 {
			continue
		}
		filters := []storage.Expr{storage.Or{Exprs: ors}}
		if dp, ok := s.registry.Param(typ, "date"); ok && dp.Type == storage.KindDate {
			// start and end are about care dates (patient-operation-everything):
			// they filter the types that have one; the others are all included.
			for _, b := range []struct{ v, prefix string }{{o.start, "ge"}, {o.end, "le"}} {
				if b.v == "" {
					continue
				}
				e, err := s.registry.Compile(typ, "date", "", []string{b.prefix + b.v})
				if err != nil {
					return nil, errBadRequest("start/end: %v", err)
				}
				filters = append(filters, e)
			}
		}
		if o.since != "" {
			e, err := s.registry.Compile(typ, "_lastUpdated", "", []string{"ge" + o.since})
			if err != nil {
				return nil, errBadRequest("_since: %v", err)
			}
			filters = append(filters, e)
		}
		if d.Filter != nil {
			filters = append(filters, d.Filter)
		}
		extra[typ] = len(filters) > 1
		perType[typ] = storage.And{Exprs: filters}
		types = append(types, typ)
	}
	if len(types) == 0 {
		return nil, nil
	}
	codes := make([]string, 0, len(union))
	for c := range union {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	linked := make([]storage.Expr, len(codes))
	for i, c := range codes {
		linked[i] = union[c]
	}
	// The union is exact for a type whose every parameter among its codes
	// is one of the type's own links, when nothing else selects: a Match
	// is on the parameter's name, so it selects the same way on any type.
	exact := map[string]bool{}
	checked := map[string][]string{}
	for _, typ := range types {
		exact[typ] = !extra[typ] && !slices.ContainsFunc(codes, func(c string) bool {
			_, has := s.registry.Param(typ, c)
			return has && !linkSet[typ][c]
		})
		checked[typ] = storage.Params(perType[typ])
	}
	var out []decodedRecord
	cursor := ""
	for {
		page, err := s.backend.Search(ctx, storage.Query{
			Types: types, Filter: storage.Or{Exprs: linked}, Count: maxCount, Cursor: cursor,
		})
		if err != nil {
			return nil, fmt.Errorf("$everything: searching the compartment: %w", err)
		}
		for _, rec := range page.Records {
			res, err := decodeRecord(rec)
			if err != nil {
				return nil, err
			}
			if !exact[rec.Type] {
				entries, err := s.registry.IndexParams(rec.Type, res, checked[rec.Type])
				if err != nil {
					return nil, fmt.Errorf("$everything: indexing %s/%s: %w", rec.Type, rec.ID, err)
				}
				ok, err := storage.Matches(perType[rec.Type], rec.ID, entries)
				if err != nil {
					return nil, fmt.Errorf("$everything: checking %s/%s: %w", rec.Type, rec.ID, err)
				}
				if !ok {
					continue
				}
			}
			out = append(out, decodedRecord{rec, res})
		}
		if page.Next == "" || len(out) > maxEverything {
			return out, nil
		}
		cursor = page.Next
	}
}

// localRefs lists the "Type/id" references to this server in a resource.
func (s *Server) localRefs(v any, out []string) []string {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if str, ok := val.(string); ok && k == "reference" {
				ref := strings.TrimPrefix(str, s.base+"/")
				if typ, id, ok := strings.Cut(ref, "/"); ok && ValidID(id) && conformance.IsResourceType(typ) {
					out = append(out, ref)
				}
				continue
			}
			out = s.localRefs(val, out)
		}
	case []any:
		for _, val := range x {
			out = s.localRefs(val, out)
		}
	}
	return out
}

// mustTime parses a date already checked by serveEverything.
func mustTime(v string) time.Time {
	t, _ := parseDateTime(v)
	return t
}
