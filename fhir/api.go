package fhir

// The engine's API for the layers above (the REST adapters, and through
// them cmd, subscription, research, clinical): interactions are Go calls
// with typed requests and results (ReadRequest/ReadResult per ReadFunc,
// WriteRequest/WriteResult through Server.Write, Bundle, ImportNDJSON, the
// export calls of export_api.go) and failures are *Error values.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

// OperationOutcome issue codes (IssueType) of the outcomes built above
// the engine.
const (
	CodeInvalid       = codeInvalid
	CodeStructure     = codeStructure
	CodeNotFound      = codeNotFound
	CodeConflict      = codeConflict
	CodeNotSupported  = codeNotSupp
	CodeForbidden     = codeForbidden
	CodeTooCostly     = codeTooCostly
	CodeException     = codeException
	CodeInformational = codeInfo
	CodeProcessing    = codeProcessing
	CodeTransient     = codeTransient
	CodeNoStore       = codeNoStore
)

// NewError is a failure with an HTTP status and one error issue.
func NewError(status int, code, format string, args ...any) *Error {
	return newError(status, code, format, args...)
}

// BadRequest is a 400 with an invalid issue.
func BadRequest(format string, args ...any) *Error { return errBadRequest(format, args...) }

// NotFound is a 404 with a not-found issue.
func NotFound(format string, args ...any) *Error { return errNotFound(format, args...) }

// Outcome is the OperationOutcome of issues.
func Outcome(issues []conformance.Issue) map[string]any { return outcome(issues) }

// Logger is the server's logger.
func (s *Server) Logger() *slog.Logger { return s.log }

// MaxBodyBytes is the cap on request bodies (Config.MaxBodyBytes, defaulted).
func (s *Server) MaxBodyBytes() int64 { return s.maxBody }

// AsError maps any error of an interaction to an *Error. Storage
// sentinels that reach this point without a more specific handling keep a
// safe, generic meaning; anything unknown is a server fault (500) and is
// logged.
func (s *Server) AsError(ctx context.Context, err error) *Error {
	var fe *Error
	if errors.As(err, &fe) {
		return fe
	}
	log := s.log
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return errNotFound("resource not found")
	case errors.Is(err, storage.ErrVersionConflict):
		return newError(http.StatusConflict, codeConflict, "the resource was changed concurrently; retry")
	case errors.Is(err, storage.ErrDuplicateClaim):
		return newError(http.StatusConflict, codeConflict, "a matching resource already exists")
	case errors.Is(err, storage.ErrBadCursor):
		return errBadRequest("invalid or expired paging link")
	case errors.Is(err, storage.ErrUnsupported):
		return newError(http.StatusNotImplemented, codeNotSupp, "this request is not supported by the configured database: %v", err)
	case errors.Is(err, storage.ErrUnavailable):
		log.WarnContext(ctx, "database unavailable", "request_id", RequestID(ctx), "err", err)
		e := newError(http.StatusServiceUnavailable, codeTransient, "the database is unavailable; nothing was changed; retry shortly")
		e.Header = http.Header{"Retry-After": {"5"}}
		return e
	case errors.Is(err, storage.ErrFull):
		log.ErrorContext(ctx, "database full", "request_id", RequestID(ctx), "err", err)
		return newError(http.StatusInsufficientStorage, codeNoStore, "the database has no room for this change; nothing was changed")
	case errors.Is(err, context.DeadlineExceeded):
		return newError(http.StatusServiceUnavailable, codeTooCostly, "the request took too long")
	}
	log.ErrorContext(ctx, "request failed", "request_id", RequestID(ctx), "err", err)
	return &Error{Status: http.StatusInternalServerError, cause: err, Issues: []conformance.Issue{{
		Severity: "fatal", Code: codeException, Diagnostics: "internal server error",
	}}}
}

// SearchSystem is the search-system interaction: GET [base]?_type=… over
// the types _type names, or every searchable type.
func (s *Server) SearchSystem(ctx context.Context, r ReadRequest) (ReadResult, error) {
	var types []string
	for _, v := range r.Query["_type"] {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if !slices.Contains(conformance.ResourceTypes(), t) {
				return ReadResult{}, errBadRequest("_type: %q is not a resource type", t)
			}
			if !slices.Contains(types, t) {
				types = append(types, t)
			}
		}
	}
	if len(types) == 0 {
		// Every type that can carry index entries: Parameters and other
		// types the registry does not know are never searchable.
		for _, t := range s.registry.ResourceTypes() {
			if isResourceType(t) {
				types = append(types, t)
			}
		}
	}
	b, err := s.searchBundle(ctx, searchScope{path: "", types: types}, r.Query, r.Strict)
	if err != nil {
		return ReadResult{}, err
	}
	return resourceResult(b)
}

// Representation is what a write answers with Prefer: return=representation:
// the version written, through the caller's output filter; readable is
// false when the caller may write but not read it (SMART `u` or `c`
// without `r`), who gets the answer of return=minimal.
func (s *Server) Representation(ctx context.Context, rec storage.Record) (raw []byte, readable bool, err error) {
	if !s.recordReadable(ctx, rec) {
		return nil, false, nil
	}
	v, err := s.view(ctx)
	if err != nil {
		return nil, false, err
	}
	raw, _, err = s.emit(ctx, v, nil, rec)
	if err != nil {
		return nil, false, err
	}
	return raw, true, nil
}

// Bundle runs a batch or transaction Bundle (body) and returns the
// response Bundle; ret is its Prefer: return= (see bundleResult). Under
// an Idempotency-Key (BeginIdempotent) the key's records are settled.
func (s *Server) Bundle(ctx context.Context, body []byte, ret string) (map[string]any, error) {
	r, err := s.runBundle(ctx, body, ret)
	if err != nil {
		return nil, err
	}
	s.settle(ctx)
	return r.bundle(), nil
}

// ImportNDJSON loads an NDJSON body (one resource per line, ids kept):
// the synchronous bulk load of POST [base]/$import. Every resource needs
// the caller's update permission. Under an Idempotency-Key
// (BeginIdempotent), a copy of a request that was partly or wholly
// committed is run again as a replay: what is stored already with the
// same content gets no new version, so the report (counts, failed lines)
// is the one the first copy would have given. The key's record, stored
// once the request is through, only ties the key to this body.
func (s *Server) ImportNDJSON(ctx context.Context, body []byte) (ImportReport, error) {
	sc := idemFrom(ctx)
	im := &Importer{s: s, authorize: s.authz != nil, replay: sc != nil}
	var rep ImportReport
	src := &importSource{name: "request"}
	if err := im.run(ctx, src, ndjsonUnits(bytes.NewReader(body)), ImportOptions{}, &rep, nil, func(int64) {}); err != nil {
		return rep, fmt.Errorf("import: %w", err)
	}
	if sc != nil {
		markIdempotent(ctx, nil)
		s.settle(ctx)
	}
	return rep, nil
}
