package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

// historyLag is how long a write may take between stamping its
// lastUpdated and becoming visible (commit, including waiting for the
// database's write lock) without a client that follows the history feed
// missing it. Writes slower than this can be missed by a client that
// trusts Bundle.meta.lastUpdated as its next _since.
const historyLag = 30 * time.Second

// Page sizes for history and search: the default when _count is absent,
// and the cap the server applies to any _count.
const (
	defaultCount = 50
	maxCount     = 1000
)

// HistoryInstance is the history-instance interaction.
func (s *Server) HistoryInstance(ctx context.Context, r ReadRequest) (ReadResult, error) {
	typ, id, err := instanceOf(r)
	if err != nil {
		return ReadResult{}, err
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
	// An instance that was never written has no history: 404, not an
	// empty Bundle that a client would read as "nothing changed".
	cur, exists, err := s.current(ctx, typ, id)
	if err != nil {
		return ReadResult{}, err
	} else if !exists {
		return ReadResult{}, errNotFound("%s/%s is not known", typ, spoken)
	}
	// One rule for every single-resource path: a resource outside the
	// grant answers 403, as a read does, not an empty Bundle; a deleted
	// one is judged by its last content, as read judges it.
	if cur.Deleted {
		if err := s.deletedWithin(ctx, d, ActionRead, cur); err != nil {
			return ReadResult{}, err
		}
	} else {
		res, err := decodeRecord(cur)
		if err != nil {
			return ReadResult{}, err
		}
		if err := s.within(d, ActionRead, typ, id, res); err != nil {
			return ReadResult{}, err
		}
	}
	return s.history(ctx, r, storage.HistoryRequest{Type: typ, ID: id}, ActionRead, "/"+typ+"/"+spoken+"/_history")
}

// HistoryType is the history-type interaction.
func (s *Server) HistoryType(ctx context.Context, r ReadRequest) (ReadResult, error) {
	typ := r.Param("type")
	if !conformance.IsResourceType(typ) {
		return ReadResult{}, errNotFound("unknown resource type %q", typ)
	}
	return s.history(ctx, r, storage.HistoryRequest{Type: typ}, ActionSearch, "/"+typ+"/_history")
}

// HistorySystem is the history-system interaction.
func (s *Server) HistorySystem(ctx context.Context, r ReadRequest) (ReadResult, error) {
	return s.history(ctx, r, storage.HistoryRequest{}, ActionSearch, "/_history")
}

// history serves one page of a history Bundle. The caller's grant is part
// of the storage query (HistoryRequest.Filter for one type, TypeFilters
// for the system), so pages, their number and the next links are made of
// versions the caller may see and nothing else: each version is judged by
// its own content, a delete by the content it deleted. Every version is
// checked again on the way out (guard), in case a backend lets one through.
func (s *Server) history(ctx context.Context, r ReadRequest, req storage.HistoryRequest, action, path string) (ReadResult, error) {
	q := r.Query
	for k := range q {
		switch k {
		case "_since", "_at", "_count", cursorParam, "_format", "_pretty":
		default:
			if r.Strict {
				return ReadResult{}, errBadRequest("unknown history parameter %q", k)
			}
			delete(q, k)
		}
	}
	var err error
	if req.Since, err = timeParam(q, "_since"); err != nil {
		return ReadResult{}, err
	}
	if req.At, err = timeParam(q, "_at"); err != nil {
		return ReadResult{}, err
	}
	if req.Count, err = countParam(q); err != nil {
		return ReadResult{}, err
	}
	if req.Count == 0 {
		req.Count = 1 // history has no total-only form; _count=0 still pages
	}
	query := canonicalQuery(q)
	binding := "history " + path + "?" + query
	// A history pass is pinned to the instant of its first page (Before,
	// carried in the signed cursor): versions written while the client
	// pages are newer than the pin, so no page repeats or shifts, and
	// the next pass (_since = Bundle.meta.lastUpdated) picks them up.
	// The pin is exclusive: one millisecond ahead keeps what was stamped
	// in the current millisecond, such as the caller's own last write.
	req.Before = now().Add(time.Millisecond)
	if tok := q.Get(cursorParam); tok != "" {
		payload, err := s.openCursor(binding, tok)
		if err != nil {
			return ReadResult{}, err
		}
		pin, backendCursor, ok := strings.Cut(payload, "|")
		ms, perr := strconv.ParseInt(pin, 10, 64)
		if !ok || perr != nil {
			return ReadResult{}, errBadRequest("invalid paging cursor")
		}
		req.Before, req.Cursor = time.UnixMilli(ms).UTC(), backendCursor
	}
	// Fail before reading anything when the caller may not see this type.
	if req.Type != "" {
		d, err := s.decide(ctx, action, req.Type)
		if err != nil {
			return ReadResult{}, err
		}
		req.Filter = d.Filter
	} else if req.TypeFilters, err = s.systemFilters(ctx, action); err != nil {
		return ReadResult{}, err
	}
	page, err := s.backend.History(ctx, req)
	if errors.Is(err, storage.ErrUnsupported) && (req.Filter != nil || req.TypeFilters != nil) {
		// A grant the backend cannot apply to old versions (Chain or Has;
		// the policy compiles no scope query into one today): refusing
		// is the only answer that reveals nothing.
		return ReadResult{}, newError(http.StatusForbidden, codeForbidden, "history is not available under the granted access: %v", err)
	}
	if err != nil {
		return ReadResult{}, fmt.Errorf("history %s: %w", path, err)
	}
	next := ""
	if page.Next != "" {
		next = strconv.FormatInt(req.Before.UnixMilli(), 10) + "|" + page.Next
	}
	b := newBundle("history", s.pageLinks(path, binding, query, next))
	// The sync point handed to the client lies historyLag before the pin:
	// a write stamps its lastUpdated before it commits, so a version
	// stamped just before the pin may become visible only after this pass
	// read its page. Re-reading that window costs a few duplicates (same
	// versionId, easy to skip); not re-reading it could lose a change.
	b["meta"] = map[string]any{"lastUpdated": formatInstant(req.Before.Add(-historyLag))}
	guard := s.newGuard(action)
	v, err := s.view(ctx)
	if err != nil {
		return ReadResult{}, err
	}
	for _, rec := range page.Records {
		ok, err := guard.allows(ctx, rec)
		if err != nil {
			return ReadResult{}, err
		}
		if !ok {
			continue
		}
		e, err := s.historyEntry(ctx, v, rec)
		if err != nil {
			return ReadResult{}, err
		}
		if e != nil {
			addEntry(b, e)
		}
	}
	return resourceResult(b)
}

// systemFilters is what a system history may show of each resource type
// under the caller's grant (see HistoryRequest.TypeFilters): nil when the
// caller sees every version of every type, else the types it may see, each
// with its filter. Types the decision point refuses are left out.
func (s *Server) systemFilters(ctx context.Context, action string) (map[string]storage.Expr, error) {
	if s.authz == nil {
		return nil, nil
	}
	out := map[string]storage.Expr{}
	open := true
	for _, t := range conformance.ResourceTypes() {
		d, err := s.authz.Decide(ctx, action, t)
		if err != nil {
			return nil, fmt.Errorf("authorizing %s on %s: %w", action, t, err)
		}
		if !d.Allowed {
			open = false
			continue
		}
		if d.Filter != nil {
			open = false
		}
		out[t] = d.Filter
	}
	if open {
		return nil, nil
	}
	return out, nil
}

// guard applies authorization to records leaving by a multi-resource
// path, asking the decision point once per type.
type guard struct {
	s         *Server
	action    string
	decisions map[string]*Decision // nil entry: type refused
}

func (s *Server) newGuard(action string) *guard {
	return &guard{s: s, action: action, decisions: map[string]*Decision{}}
}

func (g *guard) allows(ctx context.Context, rec storage.Record) (bool, error) {
	if g.s.authz == nil {
		return true, nil
	}
	d, seen := g.decisions[rec.Type]
	if !seen {
		dec, err := g.s.authz.Decide(ctx, g.action, rec.Type)
		if err != nil {
			return false, fmt.Errorf("authorizing %s on %s: %w", g.action, rec.Type, err)
		}
		if dec.Allowed {
			d = &dec
		}
		g.decisions[rec.Type] = d
	}
	if d == nil {
		return false, nil
	}
	if d.Filter == nil {
		return true, nil
	}
	if rec.Deleted {
		// A delete is shown to whoever could see what it deleted.
		err := g.s.deletedWithin(ctx, *d, g.action, rec)
		var fe *Error
		if errors.As(err, &fe) && fe.Status == http.StatusForbidden {
			return false, nil
		}
		return err == nil, err
	}
	res, err := decodeRecord(rec)
	if err != nil {
		return false, err
	}
	err = g.s.within(*d, g.action, rec.Type, rec.ID, res)
	var fe *Error
	if errors.As(err, &fe) && fe.Status == http.StatusForbidden {
		return false, nil
	}
	return err == nil, err
}

// countParam reads _count, capped at maxCount; absent gives defaultCount.
func countParam(q url.Values) (int, error) {
	v := q.Get("_count")
	if v == "" {
		return defaultCount, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, errBadRequest("_count must be a non-negative integer, not %q", v)
	}
	if n > maxCount {
		n = maxCount
		q.Set("_count", strconv.Itoa(n))
	}
	return n, nil
}

// timeParam reads an instant or a partial dateTime (2024, 2024-03,
// 2024-03-01, with or without time); partial dates start at their first
// instant in UTC.
func timeParam(q url.Values, name string) (time.Time, error) {
	v := q.Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := parseDateTime(v)
	if err != nil {
		return time.Time{}, errBadRequest("%s: %q is not a FHIR instant or dateTime", name, v)
	}
	return t, nil
}

func parseDateTime(v string) (time.Time, error) {
	layouts := []string{time.RFC3339Nano, "2006-01-02T15:04Z07:00", "2006-01-02", "2006-01", "2006"}
	var err error
	for _, l := range layouts {
		var t time.Time
		if t, err = time.Parse(l, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, err
}
