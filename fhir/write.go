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
// into a writeRequest, calls Server.write (or the interaction's own
// function) and turns the writeResult into HTTP with respondResult; a
// batch entry makes the same call and turns the result into a response
// entry. Failures are *Error values (status and OperationOutcome issues),
// never HTTP responses, so every caller answers them its own way.

// writeRequest is one create, update, patch or delete, plain or
// conditional, as it reaches the engine.
type writeRequest struct {
	method string // POST, PUT, PATCH or DELETE
	typ    string
	id     string // the instance written; "" for a create or a conditional form
	// query holds the criteria of a conditional PUT or DELETE.
	query url.Values
	// ifNoneExist holds the criteria of a conditional create.
	ifNoneExist string
	// ifMatch is the version the write requires (0: any).
	ifMatch int64
	body    []byte          // the resource (POST, PUT)
	patch   jsonpatch.Patch // the operations (PATCH)
}

// writeResult is what a successful write did.
type writeResult struct {
	method string
	// status is the HTTP status of the interaction: 201 for a create,
	// 200 for an update or a patch (and a conditional create that matched),
	// 204 for a delete.
	status int
	// rec is the version written, or the one the request matched (a
	// conditional create that found a resource, a patch that changed
	// nothing); zero when nothing was written nor matched.
	rec storage.Record
	// wrote reports whether a new version was committed.
	wrote bool
	// minimal: the caller may write but not read the resource (SMART u
	// without r), so no answer carries its content.
	minimal bool
	// diagnostics describe the result for Prefer: return=OperationOutcome.
	diagnostics string
}

// write runs one write interaction.
func (s *Server) write(ctx context.Context, req writeRequest) (writeResult, error) {
	switch req.method {
	case http.MethodPost:
		if req.ifNoneExist != "" {
			return s.runSingle(ctx, &txEntry{n: -1, method: http.MethodPost, typ: req.typ, raw: req.body, ifNoneExist: req.ifNoneExist})
		}
		return s.createResource(ctx, req.typ, req.body)
	case http.MethodPut:
		if req.query != nil {
			return s.runSingle(ctx, &txEntry{n: -1, method: http.MethodPut, typ: req.typ, query: req.query, raw: req.body, ifMatch: req.ifMatch})
		}
		return s.updateResource(ctx, req.typ, req.id, req.ifMatch, req.body)
	case http.MethodPatch:
		return s.patchResource(ctx, req.typ, req.id, req.ifMatch, req.patch)
	case http.MethodDelete:
		if req.query != nil {
			return s.runSingle(ctx, &txEntry{n: -1, method: http.MethodDelete, typ: req.typ, query: req.query, ifMatch: req.ifMatch})
		}
		return s.deleteResource(ctx, req.typ, req.id, req.ifMatch)
	}
	return writeResult{}, errBadRequest("%s is not a write interaction", req.method)
}

// runSingle runs one conditional write through the transaction engine (a
// transaction of one entry), so that the 0/1/many rules and the claims
// exist once.
func (s *Server) runSingle(ctx context.Context, e *txEntry) (writeResult, error) {
	if err := s.parseEntryResource(ctx, e); err != nil {
		return writeResult{}, err
	}
	if err := s.runTransaction(ctx, []*txEntry{e}); err != nil {
		return writeResult{}, err
	}
	r := writeResult{method: e.method, status: e.status, rec: e.rec, wrote: e.wrote}
	switch {
	case e.method == http.MethodDelete && e.wrote:
		r.diagnostics = fmt.Sprintf("deleted %s/%s (version %d)", e.rec.Type, e.rec.ID, e.rec.VersionID)
	case e.method == http.MethodDelete:
		r.rec = storage.Record{}
		r.diagnostics = "nothing matched the criteria: nothing to delete"
	case !e.wrote:
		r.status = http.StatusOK
		r.diagnostics = fmt.Sprintf("%s/%s matches the criteria: nothing created", e.rec.Type, e.rec.ID)
	default:
		r.diagnostics = fmt.Sprintf("stored %s/%s version %d", e.rec.Type, e.rec.ID, e.rec.VersionID)
	}
	return r, nil
}
