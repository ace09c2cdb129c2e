package fhir

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/anodyne-fhir/anodyne/auth"
)

// entryResult is the answer to one entry of a batch or transaction: its
// response entry, and its failure when it failed.
type entryResult struct {
	entry map[string]any
	err   *Error
}

// bundleResult is the answer to a batch or transaction Bundle, an entry
// per entry of the request, in order.
type bundleResult struct {
	typ     string // batch-response or transaction-response
	entries []entryResult
}

// bundle is the response Bundle.
func (r bundleResult) bundle() map[string]any {
	out := newBundle(r.typ, nil)
	delete(out, "link")
	for _, e := range r.entries {
		addEntry(out, e.entry)
	}
	return out
}

// batch runs a batch Bundle: every entry is an independent interaction
// with its own response, run by the same Go calls as the REST handlers
// (with the caller's identity, which is on the context), so that each one
// goes through exactly the checks, authorization and conditional rules of
// the interaction it names. An entry that fails does not affect the
// others. Each entry is audited as a request of its own.
func (s *Server) batch(ctx context.Context, entries []*txEntry, errs []error, ret string) bundleResult {
	out := bundleResult{typ: "batch-response", entries: make([]entryResult, len(entries))}
	for i, e := range entries {
		switch {
		case errs[i] != nil:
			out.entries[i] = s.failedEntry(ctx, errs[i])
		case e.reads():
			out.entries[i] = s.readEntry(ctx, e)
		default:
			out.entries[i] = s.batchEntry(ctx, i, e, ret)
		}
	}
	return out
}

// batchWrite runs one write entry of a batch.
func (s *Server) batchWrite(ctx context.Context, e *txEntry, ret string) entryResult {
	target := e.typ
	if e.id != "" {
		target += "/" + e.id
	}
	if e.query != nil {
		target += "?" + e.query.Encode()
	}
	ctx, audited := auth.AuditEntry(ctx, e.method, target)
	res, status := s.batchWriteResult(ctx, e, ret)
	audited(status)
	return res
}

func (s *Server) batchWriteResult(ctx context.Context, e *txEntry, ret string) (entryResult, int) {
	req := WriteRequest{Method: e.method, Type: e.typ, ID: e.id, Query: e.query,
		IfNoneExist: e.ifNoneExist, IfMatch: e.ifMatch, Body: e.raw}
	if e.method == http.MethodPatch {
		ops, _, err := binaryPatch(e.raw)
		if err != nil {
			return s.failed(ctx, entryError(e, err))
		}
		req.Patch = ops
	}
	r, err := s.Write(ctx, req)
	if err != nil {
		return s.failed(ctx, entryError(e, err))
	}
	entry, err := s.writeEntry(ctx, r, ret)
	if err != nil {
		return s.failed(ctx, entryError(e, err))
	}
	return entryResult{entry: entry}, r.Status
}

// failedEntry is the answer to an entry that failed.
func (s *Server) failedEntry(ctx context.Context, err error) entryResult {
	r, _ := s.failed(ctx, err)
	return r
}

// failed is failedEntry with the failure's status.
func (s *Server) failed(ctx context.Context, err error) (entryResult, int) {
	fe := s.AsError(ctx, err)
	return entryResult{err: fe, entry: map[string]any{"response": map[string]any{
		"status":  statusLine(fe.Status),
		"outcome": outcome(fe.Issues),
	}}}, fe.Status
}

// readEntry runs one GET or HEAD entry of a batch or transaction. The
// entry is audited as a request of its own.
func (s *Server) readEntry(ctx context.Context, e *txEntry) entryResult {
	ctx, audited := auth.AuditEntry(ctx, e.method, e.target)
	res, status := s.readEntryResult(ctx, e)
	audited(status)
	return res
}

func (s *Server) readEntryResult(ctx context.Context, e *txEntry) (entryResult, int) {
	path, rawQuery, _ := strings.Cut(e.target, "?")
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return s.failed(ctx, entryError(e, errBadRequest("request.url %q: the query is not valid: %v", e.url, err)))
	}
	rq := ReadRequest{Query: q, IfNoneMatch: e.ifNoneMatch, IfModifiedSince: e.ifModifiedSince}
	var fn ReadFunc
	if e.op {
		fn, err = s.opEntryRequest(strings.Split(path, "/"), e.raw, &rq)
	} else {
		fn, rq.Path, err = s.readRoute(strings.Split(path, "/"))
	}
	if err != nil {
		return s.failed(ctx, entryError(e, err))
	}
	r, err := fn(s, ctx, rq)
	if err != nil {
		return s.failed(ctx, entryError(e, err))
	}
	resp := map[string]any{"status": statusLine(r.Status)}
	out := map[string]any{"response": resp}
	if r.Rec != nil {
		resp["etag"] = ETag(r.Rec.VersionID)
		if !r.HideModified {
			resp["lastModified"] = formatInstant(r.Rec.LastUpdated)
		}
	}
	if len(r.Raw) > 0 && e.method != http.MethodHead {
		out["resource"] = json.RawMessage(r.Raw)
	}
	return entryResult{entry: out}, r.Status
}
