package fhir

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	jsonpatch "github.com/evanphx/json-patch/v5"

	"github.com/anodyne-fhir/anodyne/storage"
)

// The write interactions as Go calls. A REST handler parses its request
// into a WriteRequest, calls Server.write (or the interaction's own
// function) and turns the WriteResult into HTTP with respondResult; a
// batch entry makes the same call and turns the result into a response
// entry. Failures are *Error values (status and OperationOutcome issues),
// never HTTP responses, so every caller answers them its own way.

// WriteRequest is one create, update, patch or delete, plain or
// conditional, as it reaches the engine.
type WriteRequest struct {
	Method string // POST, PUT, PATCH or DELETE
	Type   string
	ID     string // the instance written; "" for a create or a conditional form
	// query holds the criteria of a conditional PUT or DELETE.
	Query url.Values
	// ifNoneExist holds the criteria of a conditional create.
	IfNoneExist string
	// ifMatch is the version the write requires (0: any).
	IfMatch int64
	Body    []byte          // the resource (POST, PUT)
	Patch   jsonpatch.Patch // the operations (PATCH)
}

// WriteResult is what a successful write did.
type WriteResult struct {
	Method string
	// status is the HTTP status of the interaction: 201 for a create,
	// 200 for an update or a patch (and a conditional create that matched),
	// 204 for a delete.
	Status int
	// rec is the version written, or the one the request matched (a
	// conditional create that found a resource, a patch that changed
	// nothing); zero when nothing was written nor matched.
	Rec storage.Record
	// wrote reports whether a new version was committed.
	Wrote bool
	// minimal: the caller may write but not read the resource (SMART u
	// without r), so no answer carries its content.
	Minimal bool
	// diagnostics describe the result for Prefer: return=OperationOutcome.
	Diagnostics string
}

// Write runs one write interaction.
func (s *Server) Write(ctx context.Context, req WriteRequest) (WriteResult, error) {
	switch req.Method {
	case http.MethodPost:
		if req.IfNoneExist != "" {
			return s.runSingle(ctx, &txEntry{n: -1, method: http.MethodPost, typ: req.Type, raw: req.Body, ifNoneExist: req.IfNoneExist})
		}
		return s.createResource(ctx, req.Type, req.Body)
	case http.MethodPut:
		if req.Query != nil {
			return s.runSingle(ctx, &txEntry{n: -1, method: http.MethodPut, typ: req.Type, query: req.Query, raw: req.Body, ifMatch: req.IfMatch})
		}
		return s.updateResource(ctx, req.Type, req.ID, req.IfMatch, req.Body)
	case http.MethodPatch:
		return s.patchResource(ctx, req.Type, req.ID, req.IfMatch, req.Patch)
	case http.MethodDelete:
		if req.Query != nil {
			return s.runSingle(ctx, &txEntry{n: -1, method: http.MethodDelete, typ: req.Type, query: req.Query, ifMatch: req.IfMatch})
		}
		return s.deleteResource(ctx, req.Type, req.ID, req.IfMatch)
	}
	return WriteResult{}, errBadRequest("%s is not a write interaction", req.Method)
}

// runSingle runs one conditional write through the transaction engine (a
// transaction of one entry), so that the 0/1/many rules and the claims
// exist once.
func (s *Server) runSingle(ctx context.Context, e *txEntry) (WriteResult, error) {
	if err := s.parseEntryResource(ctx, e); err != nil {
		return WriteResult{}, err
	}
	if err := s.runTransaction(ctx, []*txEntry{e}); err != nil {
		return WriteResult{}, err
	}
	r := WriteResult{Method: e.method, Status: e.status, Rec: e.rec, Wrote: e.wrote}
	switch {
	case e.method == http.MethodDelete && e.wrote:
		r.Diagnostics = fmt.Sprintf("deleted %s/%s (version %d)", e.rec.Type, e.rec.ID, e.rec.VersionID)
	case e.method == http.MethodDelete:
		r.Rec = storage.Record{}
		r.Diagnostics = "nothing matched the criteria: nothing to delete"
	case !e.wrote:
		r.Status = http.StatusOK
		r.Diagnostics = fmt.Sprintf("%s/%s matches the criteria: nothing created", e.rec.Type, e.rec.ID)
	default:
		r.Diagnostics = fmt.Sprintf("stored %s/%s version %d", e.rec.Type, e.rec.ID, e.rec.VersionID)
	}
	return r, nil
}
