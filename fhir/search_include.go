package fhir

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Includes are resolved here, above the storage interface, from the page of
// matches: _include reads the references of each match from its index
// entries and fetches the targets by id; _revinclude searches the source
// type with a reference condition on the matches. Every fetch carries the
// caller's authorization filter for the fetched type, so an include can
// never return what a direct search would not.

const (
	// maxIncluded caps the included resources of one page; an include of
	// a popular target (every Observation of a Patient) must not turn one
	// page into the whole database.
	maxIncluded = 1000
	// maxIncludeRounds bounds :iterate, which otherwise follows cycles
	// (Observation.hasMember) as far as the data goes.
	maxIncludeRounds = 4
	// idChunk keeps IDs lists of one query small enough for any backend.
	idChunk = 200
)

// includeSpec is one _include or _revinclude value.
type includeSpec struct {
	rev     bool
	iterate bool
	source  string // source type; "*" for every type
	param   string // reference parameter of source; "*" for all of them
	target  string // optional target type
}

// parseInclude reads "Source:param[:Target]" or "*" (search.html#include).
func (s *Server) parseInclude(name, v string, types []string) (includeSpec, error) {
	base, mod, _ := strings.Cut(name, ":")
	spec := includeSpec{rev: base == "_revinclude", iterate: mod == "iterate" || mod == "recurse"}
	if v == "*" {
		if spec.rev {
			// Every reference parameter of every type is hundreds of queries per page.
			return spec, newError(http.StatusBadRequest, codeTooCostly, "%s=*: reverse-including through every reference of every type is too costly; name the source type", name)
		}
		spec.source, spec.param = "*", "*"
		return spec, nil
	}
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return spec, errBadRequest("%s=%s: expected SourceType:parameter[:TargetType]", name, v)
	}
	spec.source, spec.param = parts[0], parts[1]
	if len(parts) == 3 {
		spec.target = parts[2]
		if !isResourceType(spec.target) {
			return spec, errBadRequest("%s=%s: %q is not a resource type", name, v, spec.target)
		}
	}
	if !isResourceType(spec.source) {
		return spec, errBadRequest("%s=%s: %q is not a resource type", name, v, spec.source)
	}
	if spec.param == "*" {
		return spec, nil
	}
	p, ok := s.registry.Param(spec.source, spec.param)
	if !ok || p.Type != storage.KindReference {
		return spec, errBadRequest("%s=%s: %s is not a reference parameter of %s", name, v, spec.param, spec.source)
	}
	if spec.target != "" && len(p.Targets) > 0 && !slices.Contains(p.Targets, spec.target) {
		return spec, errBadRequest("%s=%s: %s.%s cannot refer to %s", name, v, spec.source, spec.param, spec.target)
	}
	return spec, nil
}

// includes returns the resources that the include directives add to a
// page of matches, without duplicates and without the matches themselves.
func (s *Server) includes(ctx context.Context, decs *searchDecisions, matches []storage.Record, specs []includeSpec) ([]storage.Record, error) {
	if len(specs) == 0 || len(matches) == 0 {
		return nil, nil
	}
	seen := map[string]bool{}
	for _, r := range matches {
		seen[r.Type+"/"+r.ID] = true
	}
	var out []storage.Record
	frontier := matches
	for round := 0; round < maxIncludeRounds && len(frontier) > 0 && len(out) < maxIncluded; round++ {
		var added []storage.Record
		for _, spec := range specs {
			if round > 0 && !spec.iterate {
				continue
			}
			var recs []storage.Record
			var err error
			if spec.rev {
				recs, err = s.revInclude(ctx, decs, frontier, spec, maxIncluded-len(out)-len(added))
			} else {
				recs, err = s.forwardInclude(ctx, decs, frontier, spec)
			}
			if err != nil {
				return nil, err
			}
			for _, r := range recs {
				k := r.Type + "/" + r.ID
				if seen[k] || len(out)+len(added) >= maxIncluded {
					continue
				}
				seen[k] = true
				added = append(added, r)
			}
		}
		out = append(out, added...)
		frontier = added
	}
	return out, nil
}

// forwardInclude fetches the resources that the sources' reference
// parameter points to.
func (s *Server) forwardInclude(ctx context.Context, decs *searchDecisions, sources []storage.Record, spec includeSpec) ([]storage.Record, error) {
	byType := map[string][]string{}
	for _, rec := range sources {
		if spec.source != "*" && rec.Type != spec.source {
			continue
		}
		res, err := decodeRecord(rec)
		if err != nil {
			return nil, err
		}
		entries, err := s.registry.Index(rec.Type, res)
		if err != nil {
			return nil, fmt.Errorf("indexing %s/%s for _include: %w", rec.Type, rec.ID, err)
		}
		for _, e := range entries {
			if e.Kind != storage.KindReference || e.RefType == "" || e.RefID == "" {
				continue
			}
			if spec.param != "*" && e.Param != spec.param || spec.target != "" && e.RefType != spec.target {
				continue
			}
			if !slices.Contains(byType[e.RefType], e.RefID) {
				byType[e.RefType] = append(byType[e.RefType], e.RefID)
			}
		}
	}
	types := make([]string, 0, len(byType))
	for t := range byType {
		types = append(types, t)
	}
	slices.Sort(types)
	var out []storage.Record
	for _, t := range types {
		td, err := decs.get(ctx, t)
		if err != nil {
			return nil, err
		}
		if !td.allowed {
			continue
		}
		ids := byType[t]
		for len(ids) > 0 {
			n := min(len(ids), idChunk)
			page, err := s.backend.Search(ctx, storage.Query{
				Types: []string{t}, Filter: and(storage.IDs{IDs: ids[:n]}, td.filter), Count: n,
			})
			if err != nil {
				return nil, fmt.Errorf("_include of %s: %w", t, err)
			}
			out = append(out, page.Records...)
			ids = ids[n:]
		}
	}
	return out, nil
}

// revInclude searches the source type for resources whose reference
// parameter points to one of the targets.
func (s *Server) revInclude(ctx context.Context, decs *searchDecisions, targets []storage.Record, spec includeSpec, limit int) ([]storage.Record, error) {
	if limit <= 0 {
		return nil, nil
	}
	type srcParam struct{ typ, code string }
	var pairs []srcParam
	if spec.source == "*" || spec.param == "*" {
		srcTypes := []string{spec.source}
		if spec.source == "*" {
			srcTypes = s.registry.ResourceTypes()
		}
		for _, st := range srcTypes {
			for _, p := range s.registry.Params(st) {
				if p.Type == storage.KindReference {
					pairs = append(pairs, srcParam{st, p.Code})
				}
			}
		}
	} else {
		pairs = []srcParam{{spec.source, spec.param}}
	}
	var out []storage.Record
	for _, sp := range pairs {
		p, ok := s.registry.Param(sp.typ, sp.code)
		if !ok {
			continue
		}
		var alts []storage.Expr
		for _, t := range targets {
			if spec.target != "" && t.Type != spec.target || len(p.Targets) > 0 && !slices.Contains(p.Targets, t.Type) {
				continue
			}
			alts = append(alts, storage.And{Exprs: []storage.Expr{
				storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: t.Type},
				storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: t.ID},
			}})
		}
		if len(alts) == 0 {
			continue
		}
		td, err := decs.get(ctx, sp.typ)
		if err != nil {
			return nil, err
		}
		if !td.allowed {
			continue
		}
		for len(alts) > 0 && len(out) < limit {
			n := min(len(alts), idChunk)
			match := storage.Match{Param: sp.code, Kind: storage.KindReference, Cond: storage.Or{Exprs: alts[:n]}}
			page, err := s.backend.Search(ctx, storage.Query{
				Types: []string{sp.typ}, Filter: and(match, td.filter), Count: limit - len(out),
			})
			if err != nil {
				return nil, fmt.Errorf("_revinclude of %s:%s: %w", sp.typ, sp.code, err)
			}
			out = append(out, page.Records...)
			alts = alts[n:]
		}
	}
	return out, nil
}
