package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

const MimeNDJSON = "application/fhir+ndjson"

// Close stops the background bulk export workers. Jobs they were running
// resume at the next start.
func (s *Server) Close() error {
	if s.bulk != nil {
		s.bulk.close()
	}
	return nil
}

// groupCohort reads a Group the caller may read and returns its Patients.
// spoken is the id as the caller named it, for messages.
func (s *Server) groupCohort(ctx context.Context, id, spoken string) ([]string, error) {
	d, err := s.decide(ctx, ActionRead, "Group")
	if err != nil {
		return nil, err
	}
	rec, err := s.backend.Read(ctx, "Group", id)
	if errors.Is(err, storage.ErrNotFound) || err == nil && rec.Deleted {
		return nil, errNotFound("Group/%s is not known", spoken)
	}
	if err != nil {
		return nil, fmt.Errorf("reading Group/%s: %w", id, err)
	}
	group, err := decodeRecord(rec)
	if err != nil {
		return nil, err
	}
	if err := s.within(d, ActionRead, "Group", id, group); err != nil {
		return nil, err
	}
	// An empty cohort is a valid export of nothing: IDs with no ids
	// selects no resource.
	return append([]string{}, groupPatients(group, s.base)...), nil
}

// groupPatients returns the ids of the Patients in Group.member.entity
// ("Patient/x" or an absolute URL on this server).
func groupPatients(group map[string]any, base string) []string {
	var ids []string
	members, _ := group["member"].([]any)
	for _, m := range members {
		mm, _ := m.(map[string]any)
		if inactive, _ := mm["inactive"].(bool); inactive {
			continue
		}
		ent, _ := mm["entity"].(map[string]any)
		ref, _ := ent["reference"].(string)
		ref = strings.TrimPrefix(ref, base+"/")
		if id, ok := strings.CutPrefix(ref, "Patient/"); ok && ValidID(id) && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// planExport turns export parameters into a job: the types, each one's
// authorization decision and filters, grouped into storage queries.
func (s *Server) planExport(ctx context.Context, scope string, cohort []string, q url.Values, strict bool) (exportJob, error) {
	for k := range q {
		switch k {
		case "_outputFormat", "_type", "_since", "_typeFilter", "_format", "_pretty":
		default:
			if strict {
				return exportJob{}, errBadRequest("unsupported bulk export parameter %q", k)
			}
		}
	}
	if f := q.Get("_outputFormat"); f != "" {
		switch strings.ReplaceAll(f, " ", "+") {
		case MimeNDJSON, "application/ndjson", "ndjson":
		default:
			return exportJob{}, errBadRequest("_outputFormat %q is not supported; use %s", f, MimeNDJSON)
		}
	}
	since, err := timeParam(q, "_since")
	if err != nil {
		return exportJob{}, err
	}
	types, explicit, err := s.exportTypes(q, scope)
	if err != nil {
		return exportJob{}, err
	}
	typeFilters, err := s.typeFilters(ctx, q, types)
	if err != nil {
		return exportJob{}, err
	}
	// One storage query per distinct filter: types whose filters are equal
	// (commonly all of them, unfiltered) are read in a single pass.
	var groups []exportGroup
	byFilter := map[string]int{}
	var allowedTypes int
	for _, typ := range types {
		d, err := s.decide(ctx, ActionSearch, typ)
		if err != nil {
			var fe *Error
			if !explicit && errors.As(err, &fe) && fe.Status == http.StatusForbidden {
				continue // not requested by name: export what the caller may see
			}
			return exportJob{}, err
		}
		allowedTypes++
		var parts []storage.Expr
		if d.Filter != nil {
			parts = append(parts, d.Filter)
		}
		if f := s.scopeFilter(scope, typ, cohort); f != nil {
			parts = append(parts, f)
		}
		if !since.IsZero() {
			if _, ok := s.registry.Param(typ, "_lastUpdated"); !ok {
				// Not indexed by lastUpdated (Parameters): _since cannot
				// be applied, so the type cannot be exported with it.
				if explicit {
					return exportJob{}, errBadRequest("_since cannot be applied to %s", typ)
				}
				allowedTypes--
				continue
			}
			f, err := s.registry.Compile(typ, "_lastUpdated", "", []string{"ge" + formatInstant(since)})
			if err != nil {
				return exportJob{}, fmt.Errorf("compiling _since for %s: %w", typ, err)
			}
			parts = append(parts, f)
		}
		if tf := typeFilters[typ]; len(tf) == 1 {
			parts = append(parts, tf[0])
		} else if len(tf) > 1 {
			parts = append(parts, storage.Or{Exprs: tf})
		}
		var filter storage.Expr
		switch len(parts) {
		case 0:
		case 1:
			filter = parts[0]
		default:
			filter = storage.And{Exprs: parts}
		}
		key := ""
		if filter != nil {
			key = filter.String()
		}
		if i, ok := byFilter[key]; ok {
			groups[i].Types = append(groups[i].Types, typ)
			continue
		}
		raw, err := storage.MarshalExpr(filter)
		if err != nil {
			return exportJob{}, fmt.Errorf("storing the export filter of %s: %w", typ, err)
		}
		byFilter[key] = len(groups)
		groups = append(groups, exportGroup{Types: []string{typ}, Filter: raw})
	}
	if allowedTypes == 0 {
		return exportJob{}, newError(http.StatusForbidden, codeForbidden, "no granted scope allows searching any of the exported resource types")
	}
	return exportJob{
		ID:              randomID(),
		TransactionTime: now(),
		Created:         time.Now().UTC(),
		Status:          jobQueued,
		Groups:          groups,
		Output:          []exportOutput{},
	}, nil
}

// requester names the caller for job ownership: the verified principal
// (issuer, client and subject of the token), or "" when the request
// carries none (authorization off).
func (s *Server) requester(ctx context.Context) (string, error) {
	p := auth.FromContext(ctx)
	if p == nil {
		if s.authz != nil {
			if _, open := s.authz.(auth.AllowAll); !open {
				return "", newError(http.StatusForbidden, codeForbidden, "bulk export: the requester cannot be identified")
			}
		}
		return "", nil
	}
	return strings.Join([]string{p.Issuer, p.ClientID, p.Subject}, "\x00"), nil
}

// exportTypes returns the types to export and whether the client named
// them (_type). Patient and Group exports are limited to the Patient
// compartment.
func (s *Server) exportTypes(q url.Values, scope string) ([]string, bool, error) {
	inScope := func(typ string) bool {
		return scope == "system" || typ == "Patient" || len(s.registry.Compartment("Patient", typ)) > 0
	}
	var named []string
	for _, v := range q["_type"] {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if t == "" {
				continue
			}
			if !conformance.IsResourceType(t) {
				return nil, false, errBadRequest("_type: %q is not a resource type", t)
			}
			if !inScope(t) {
				return nil, false, errBadRequest("_type: %s is not in the Patient compartment and cannot be part of a %s export", t, scope)
			}
			if !slices.Contains(named, t) {
				named = append(named, t)
			}
		}
	}
	if len(named) > 0 {
		return named, true, nil
	}
	var all []string
	for _, t := range conformance.ResourceTypes() {
		if inScope(t) {
			all = append(all, t)
		}
	}
	return all, false, nil
}

// typeFilters compiles _typeFilter: each value is a search query
// "Type?params"; queries for one type are ORed, and the parameters inside
// one query ANDed, through the same parser as the search interaction.
func (s *Server) typeFilters(ctx context.Context, q url.Values, types []string) (map[string][]storage.Expr, error) {
	out := map[string][]storage.Expr{}
	for _, v := range q["_typeFilter"] {
		for _, query := range splitTypeFilters(v) {
			typ, params, ok := strings.Cut(query, "?")
			if !ok || !conformance.IsResourceType(typ) {
				return nil, errBadRequest("_typeFilter %q is not of the form Type?search-parameters", query)
			}
			if !slices.Contains(types, typ) {
				return nil, errBadRequest("_typeFilter names %s, which is not exported (see _type)", typ)
			}
			vals, err := url.ParseQuery(params)
			if err != nil {
				return nil, errBadRequest("_typeFilter %q: %v", query, err)
			}
			// Strict: a filter we could not apply would export more than
			// the client asked for.
			req, err := s.compileSearch(ctx, s.newSearchDecisions(), []string{typ}, vals, true)
			if err != nil {
				return nil, err
			}
			switch len(req.Filters) {
			case 0:
				return nil, errBadRequest("_typeFilter %q selects nothing in particular", query)
			case 1:
				out[typ] = append(out[typ], req.Filters[0])
			default:
				out[typ] = append(out[typ], storage.And{Exprs: req.Filters})
			}
		}
	}
	return out, nil
}

// splitTypeFilters splits a comma-separated _typeFilter value only where a
// new query starts ("...,Type?"), because the queries themselves may hold
// commas (OR values).
func splitTypeFilters(v string) []string {
	var out []string
	start := 0
	for i := 0; i < len(v); i++ {
		if v[i] != ',' {
			continue
		}
		rest := v[i+1:]
		q := strings.IndexByte(rest, '?')
		if q > 0 && conformance.IsResourceType(rest[:q]) {
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}

// scopeFilter restricts a Patient-level export to resources in some
// Patient's compartment, and a Group export to its members' compartments.
func (s *Server) scopeFilter(scope, typ string, cohort []string) storage.Expr {
	if scope == "system" {
		return nil
	}
	if typ == "Patient" {
		if scope == "group" {
			return storage.IDs{IDs: cohort}
		}
		return nil
	}
	idCond := storage.Expr(storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: "Patient"})
	if scope == "group" {
		ors := make([]storage.Expr, len(cohort))
		for i, id := range cohort {
			ors[i] = storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: id}
		}
		idCond = storage.And{Exprs: []storage.Expr{idCond, storage.Or{Exprs: ors}}}
	}
	var ors []storage.Expr
	for _, p := range s.registry.Compartment("Patient", typ) {
		ors = append(ors, storage.Match{Param: p, Kind: storage.KindReference, Cond: idCond})
	}
	if len(ors) == 1 {
		return ors[0]
	}
	return storage.Or{Exprs: ors}
}

// bulkWorkers is the number of export workers for Config.ExportWorkers:
// one by default, so that exports never take more than one core from
// interactive requests.
func bulkWorkers(n int) int {
	if n == 0 {
		return 1
	}
	return n
}

// ExportFile is one file written by Export.
type ExportFile struct {
	Type  string
	Path  string
	Count int64
}

// Export runs an export synchronously into dir, for the operator's
// command line talking to the database directly: the same planning and
// writing as $export, without a job record and without authorization.
// group, when not empty, exports that Group's members; patients exports
// the Patient compartments. q holds the $export parameters (_type,
// _since, _typeFilter).
func (s *Server) Export(ctx context.Context, q url.Values, patients bool, group, dir string) ([]ExportFile, error) {
	scope := "system"
	var cohort []string
	switch {
	case group != "":
		if !ValidID(group) {
			return nil, fmt.Errorf("invalid Group id %q", group)
		}
		var err error
		if cohort, err = s.groupCohort(ctx, group, group); err != nil {
			return nil, err
		}
		scope = "group"
	case patients:
		scope = "patient"
	}
	job, err := s.planExport(ctx, scope, cohort, q, true)
	if err != nil {
		return nil, err
	}
	r := &bulkRunner{s: s, files: dirFiles{dir: dir, flat: true}, log: s.log, direct: true,
		running: map[string]context.CancelFunc{}, cancelled: map[string]bool{}}
	st := &runState{exportJob: job}
	if err := r.execute(ctx, st); err != nil {
		return nil, err
	}
	job = st.exportJob
	out := make([]ExportFile, 0, len(job.Output))
	for _, o := range job.Output {
		out = append(out, ExportFile{Type: o.Type, Path: filepath.Join(dir, o.File), Count: o.Count})
	}
	return out, nil
}
