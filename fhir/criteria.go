package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

// This file is what the fhir package offers to packages that act on the
// store outside a request (subscriptions): compiling a search the way the
// search endpoint does, and writing a server-owned change through the one
// commit path.

// CriteriaError is a search string that cannot serve as standing
// criteria; Param names the offending parameter ("" for the whole string).
type CriteriaError struct {
	Param string
	Why   string
}

func (e *CriteriaError) Error() string {
	if e.Param == "" {
		return "criteria: " + e.Why
	}
	return fmt.Sprintf("criteria parameter %q: %s", e.Param, e.Why)
}

// resultParams shape a search's result page; they mean nothing for a
// standing query evaluated one resource at a time.
var resultParams = map[string]bool{
	"_sort": true, "_count": true, "_total": true, "_summary": true, "_elements": true, "_format": true, "_pretty": true,
	"_include": true, "_revinclude": true, "_contained": true, "_containedType": true,
}

// CompileCriteria compiles "Type?query" (R4 Subscription.criteria) with
// the search engine, strictly: an unknown parameter, a malformed value or
// a parameter that needs other resources to evaluate (chains, _has,
// _list) is a *CriteriaError, because the criteria are matched in memory
// against each written version's own index entries (storage.Matches).
// Authorization of the caller is not applied here.
func (s *Server) CompileCriteria(ctx context.Context, criteria string) (string, storage.Expr, error) {
	typ, query, _ := strings.Cut(criteria, "?")
	if !isResourceType(typ) {
		return "", nil, &CriteriaError{Why: fmt.Sprintf("%q does not start with a resource type", criteria)}
	}
	params, err := url.ParseQuery(query)
	if err != nil {
		return "", nil, &CriteriaError{Why: "malformed query: " + err.Error()}
	}
	var exprs []storage.Expr
	for name, values := range params {
		base, _, _ := strings.Cut(name, ":")
		switch {
		case resultParams[base] || strings.HasPrefix(name, "_include") || strings.HasPrefix(name, "_revinclude"):
			return "", nil, &CriteriaError{Param: name, Why: "shapes a result page, not a standing query"}
		case base == "_has" || strings.Contains(name, ".") || base == "_list" || base == "_type":
			return "", nil, &CriteriaError{Param: name, Why: "needs other resources to evaluate; subscriptions match each write on its own"}
		}
		e, err := s.compileParam(ctx, s.newSearchDecisions(), typ, name, values, 0)
		if err != nil {
			var ig *ignored
			var fe *Error
			switch {
			case errors.As(err, &ig):
				return "", nil, &CriteriaError{Param: name, Why: ig.why}
			case errors.As(err, &fe) && fe.Status < 500:
				return "", nil, &CriteriaError{Param: name, Why: fe.Error()}
			}
			return "", nil, fmt.Errorf("compiling criteria parameter %s: %w", name, err)
		}
		// Probe the expression in memory: a node Matches cannot evaluate
		// would fail every write later.
		if _, err := storage.Matches(e, "probe", nil); err != nil {
			return "", nil, &CriteriaError{Param: name, Why: "cannot be evaluated on one resource: " + err.Error()}
		}
		exprs = append(exprs, e)
	}
	return typ, and(exprs...), nil
}

// CriteriaOutcome is the 422 answer for a rejected criteria string, for
// observers that refuse a write over it.
func CriteriaOutcome(err *CriteriaError, expression string) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Issues: []conformance.Issue{{
		Severity: "error", Code: codeInvalid, Diagnostics: err.Error(), Expression: expression,
	}}}
}

// PutOwned writes a new version of a resource the server maintains (a
// Subscription's status set by the delivery worker) on top of version
// expect, through the same commit path as a client's update: observers
// run and the Commit checks the version. It returns
// storage.ErrVersionConflict when the resource changed meanwhile. The
// resource is not validated: the caller changes only elements it owns.
func (s *Server) PutOwned(ctx context.Context, res map[string]any, expect int64) (storage.Record, error) {
	typ, _ := res["resourceType"].(string)
	id, _ := res["id"].(string)
	if typ == "" || !ValidID(id) {
		return storage.Record{}, fmt.Errorf("put owned: resource without type or valid id (%q/%q)", typ, id)
	}
	w, err := s.prepare(typ, id, res, expect, time.Now().UTC(), http.MethodPut)
	if err != nil {
		return storage.Record{}, err
	}
	return s.commitOne(ctx, w)
}

// Emit returns a stored version as the Principal in ctx may receive it:
// through Config.Output (the one output filter), like every read. It
// returns the JSON and the id that caller knows the resource by.
// Authorization is the caller's: Emit does not decide.
func (s *Server) Emit(ctx context.Context, rec storage.Record) ([]byte, string, error) {
	v, err := s.view(ctx)
	if err != nil {
		return nil, "", err
	}
	return s.emit(ctx, v, nil, rec)
}

// Base is the FHIR base URL (Config.BaseURL + "/fhir"), for absolute
// references in what is sent outside a request.
func (s *Server) Base() string { return s.base }
