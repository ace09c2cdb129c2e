package fhir

// REST adapters: parse the HTTP request, call the interaction, encode
// its result. Only rest_*.go, server.go and content.go may import Echo
// (TestEngineFilesNoHTTPLayer).

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

// resourceType returns the :type path parameter, 404 when it is not an R4
// resource type (http.html: "resource type not supported").
func resourceType(c echo.Context) (string, error) {
	t := c.Param("type")
	if !conformance.IsResourceType(t) {
		return "", NotFound("unknown resource type %q", t)
	}
	return t, nil
}

// pathID returns the :id path parameter. A malformed id cannot name a
// stored resource, so reads answer 404 and writes 400.
func pathID(c echo.Context, status int) (string, error) {
	id := c.Param("id")
	if !ValidID(id) {
		return "", NewError(status, CodeInvalid, "invalid resource id %q: R4 ids are 1-64 of [A-Za-z0-9-.]", id)
	}
	return id, nil
}

// instancePath returns the :type and :id path parameters of an instance
// interaction; badID is the status of a malformed id (see pathID).
func instancePath(c echo.Context, badID int) (typ, id string, err error) {
	typ, err = resourceType(c)
	if err != nil {
		return "", "", err
	}
	id, err = pathID(c, badID)
	if err != nil {
		return "", "", err
	}
	return typ, id, nil
}

// writeTarget returns what an instance write (PUT, PATCH, DELETE) applies
// to: type, id, and the version If-Match requires (0 when absent).
func writeTarget(c echo.Context) (typ, id string, want int64, err error) {
	typ, id, err = instancePath(c, http.StatusBadRequest)
	if err != nil {
		return "", "", 0, err
	}
	want, err = ifMatch(c)
	if err != nil {
		return "", "", 0, err
	}
	return typ, id, want, nil
}

// ifMatch returns the version required by If-Match (0 when absent); a
// header that names no version is a 400.
func ifMatch(c echo.Context) (int64, error) {
	h := c.Request().Header.Get("If-Match")
	if h == "" {
		return 0, nil
	}
	n, ok := ParseETag(h)
	if !ok {
		return 0, BadRequest("If-Match %q is not a version ETag such as W/\"3\"", h)
	}
	return n, nil
}

// setVersionHeaders sets ETag, Last-Modified and, for writes, Location.
func (s *Server) setVersionHeaders(c echo.Context, rec storage.Record, location bool) {
	h := c.Response().Header()
	h.Set("ETag", ETag(rec.VersionID))
	h.Set(echo.HeaderLastModified, rec.LastUpdated.UTC().Format(http.TimeFormat))
	if location {
		h.Set(echo.HeaderLocation, s.VersionURL(rec))
	}
}

// respondWrite answers a successful write according to Prefer: return=
// (representation by default, minimal, or OperationOutcome).
//
// The resource is returned only to a caller who may read it: one who may
// write but not read (SMART `u` or `c` without `r`) gets the answer of
// return=minimal, whatever it asked for, as PATCH does.
func (s *Server) respondWrite(c echo.Context, status int, rec storage.Record, diagnostics string) error {
	s.setVersionHeaders(c, rec, true)
	ret := preferReturn(c)
	var raw []byte
	if ret != "minimal" && ret != "OperationOutcome" {
		var readable bool
		var err error
		if raw, readable, err = s.Representation(c.Request().Context(), rec); err != nil {
			return err
		} else if !readable {
			ret = "minimal"
		}
	}
	switch ret {
	case "minimal":
		return c.NoContent(status)
	case "OperationOutcome":
		return writeResource(c, status, Outcome([]conformance.Issue{{
			Severity: "information", Code: CodeInformational, Diagnostics: diagnostics,
		}}))
	}
	return writeRaw(c, status, raw)
}

// preferReturn reads the return= token of the Prefer header.
func preferReturn(c echo.Context) string {
	return preferToken(c, "return")
}

func preferToken(c echo.Context, name string) string {
	for _, h := range c.Request().Header.Values("Prefer") {
		for _, part := range strings.Split(h, ",") {
			for _, kv := range strings.Split(part, ";") {
				k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), name) {
					return strings.Trim(strings.TrimSpace(v), `"`)
				}
			}
		}
	}
	return ""
}

// respondResult answers a write over HTTP, according to Prefer: return=.
func (s *Server) respondResult(c echo.Context, r WriteResult) error {
	switch {
	case r.Method == http.MethodDelete:
		if r.Wrote {
			c.Response().Header().Set("ETag", ETag(r.Rec.VersionID))
		}
		return s.respondDelete(c, r.Diagnostics)
	case r.Minimal:
		s.setVersionHeaders(c, r.Rec, true)
		return c.NoContent(r.Status)
	}
	return s.respondWrite(c, r.Status, r.Rec, r.Diagnostics)
}

// create handles POST [base]/[type]: the server assigns a new id (any id in
// the body is ignored, as http.html#create requires) and answers 201 with
// Location and ETag. With If-None-Exist it is a conditional create.
func (s *Server) create(c echo.Context) error {
	typ, err := resourceType(c)
	if err != nil {
		return err
	}
	body, err := s.readBody(c, mimeFHIRJSON, mimeJSON)
	if err != nil {
		return err
	}
	return s.keyedWrite(c, body, http.MethodPost, func(ctx context.Context) (WriteResult, error) {
		return s.Write(ctx, WriteRequest{
			Method: http.MethodPost, Type: typ, Body: body,
			IfNoneExist: c.Request().Header.Get("If-None-Exist"),
		})
	})
}

// update handles PUT [base]/[type]/[id]: a new version, or the first one
// when the client chooses the id (update-as-create, 201). If-Match turns
// it into a compare-and-set on that version (412 otherwise).
func (s *Server) update(c echo.Context) error {
	typ, id, want, err := writeTarget(c)
	if err != nil {
		return err
	}
	body, err := s.readBody(c, mimeFHIRJSON, mimeJSON)
	if err != nil {
		return err
	}
	return s.keyedWrite(c, body, http.MethodPut, func(ctx context.Context) (WriteResult, error) {
		return s.Write(ctx, WriteRequest{Method: http.MethodPut, Type: typ, ID: id, IfMatch: want, Body: body})
	})
}

// patch handles PATCH [base]/[type]/[id] with a JSON Patch (RFC 6902,
// application/json-patch+json). The patched resource goes through the
// same validation as an update and must keep its id and type.
//
// A caller who may update but not read the resource (SMART `u` without
// `r`) must learn nothing of its content: the answer is always as for
// Prefer: return=minimal, `test` operations (an oracle on stored values)
// are refused before the patch is evaluated, and a failing patch gets a
// 422 without detail.
func (s *Server) patch(c echo.Context) error {
	typ, id, want, err := writeTarget(c)
	if err != nil {
		return err
	}
	body, err := s.readBody(c, mimeJSONPatch)
	if err != nil {
		return err
	}
	ops, err := jsonpatch.DecodePatch(body)
	if err != nil {
		return NewError(http.StatusBadRequest, CodeStructure, "invalid JSON Patch document: %v", err)
	}
	return s.keyedWrite(c, body, http.MethodPatch, func(ctx context.Context) (WriteResult, error) {
		return s.Write(ctx, WriteRequest{Method: http.MethodPatch, Type: typ, ID: id, IfMatch: want, Patch: ops})
	})
}

// delete handles DELETE [base]/[type]/[id]. A delete is a new version with
// no content, so history keeps what was there and a later read is 410.
// Deleting what does not exist, or is already deleted, succeeds without a
// new version (http.html#delete: delete is idempotent).
func (s *Server) delete(c echo.Context) error {
	typ, id, want, err := writeTarget(c)
	if err != nil {
		return err
	}
	return s.keyedWrite(c, nil, http.MethodDelete, func(ctx context.Context) (WriteResult, error) {
		return s.Write(ctx, WriteRequest{Method: http.MethodDelete, Type: typ, ID: id, IfMatch: want})
	})
}

func (s *Server) respondDelete(c echo.Context, diagnostics string) error {
	if preferReturn(c) == "OperationOutcome" {
		return writeResource(c, http.StatusOK, Outcome([]conformance.Issue{{
			Severity: "information", Code: CodeInformational, Diagnostics: diagnostics,
		}}))
	}
	return c.NoContent(http.StatusNoContent)
}

// conditionalQuery returns the query of a request to a type endpoint
// without the formatting parameters.
func conditionalQuery(c echo.Context, typ string) (url.Values, error) {
	return ConditionalParams(typ, c.Request().URL.RawQuery)
}

// requireCriteria answers PUT or DELETE on a type without criteria as the
// method it then is: not allowed on that URL.
func requireCriteria(c echo.Context) error {
	if c.Request().URL.RawQuery == "" {
		r := c.Request()
		return NewError(http.StatusMethodNotAllowed, CodeNotSupported, "%s %s needs search criteria (a conditional %s)", r.Method, r.URL.Path, strings.ToLower(r.Method))
	}
	return nil
}

// conditionalTarget returns what a conditional PUT or DELETE applies to:
// the type, its criteria, and the version If-Match requires (0 when
// absent).
func conditionalTarget(c echo.Context) (typ string, q url.Values, want int64, err error) {
	if err := requireCriteria(c); err != nil {
		return "", nil, 0, err
	}
	typ, err = resourceType(c)
	if err != nil {
		return "", nil, 0, err
	}
	q, err = conditionalQuery(c, typ)
	if err != nil {
		return "", nil, 0, err
	}
	want, err = ifMatch(c)
	if err != nil {
		return "", nil, 0, err
	}
	return typ, q, want, nil
}

// conditionalUpdate handles PUT [type]?criteria.
func (s *Server) conditionalUpdate(c echo.Context) error {
	typ, q, want, err := conditionalTarget(c)
	if err != nil {
		return err
	}
	body, err := s.readBody(c, mimeFHIRJSON, mimeJSON)
	if err != nil {
		return err
	}
	return s.keyedWrite(c, body, http.MethodPut, func(ctx context.Context) (WriteResult, error) {
		return s.Write(ctx, WriteRequest{Method: http.MethodPut, Type: typ, Query: q, Body: body, IfMatch: want})
	})
}

// conditionalDelete handles DELETE [type]?criteria: no match is a
// successful no-op, one match is deleted, several are refused with 412
// (the server does not delete several resources at once).
func (s *Server) conditionalDelete(c echo.Context) error {
	typ, q, want, err := conditionalTarget(c)
	if err != nil {
		return err
	}
	return s.keyedWrite(c, nil, http.MethodDelete, func(ctx context.Context) (WriteResult, error) {
		return s.Write(ctx, WriteRequest{Method: http.MethodDelete, Type: typ, Query: q, IfMatch: want})
	})
}

// bundle handles POST [base] with a batch or transaction Bundle.
func (s *Server) bundle(c echo.Context) error {
	body, err := s.readBody(c, mimeFHIRJSON, mimeJSON)
	if err != nil {
		return err
	}
	ctx, release, err := s.beginIdempotent(c, body)
	if err != nil {
		return err
	}
	defer release()
	b, err := s.Bundle(ctx, body, bundleReturn(c))
	if err != nil {
		return err
	}
	return writeResource(c, http.StatusOK, b)
}

// bundleReturn is the Prefer return= of a batch or transaction: the
// entries carry their resource only when asked for (representation), an
// OperationOutcome when asked for, and otherwise only the response
// metadata, which keeps the answer to a large ingest small.
func bundleReturn(c echo.Context) string {
	return preferReturn(c)
}

// beginIdempotent is BeginIdempotent of an HTTP request: its
// Idempotency-Key and what identifies the request.
func (s *Server) beginIdempotent(c echo.Context, body []byte) (context.Context, func(), error) {
	r := c.Request()
	return s.BeginIdempotent(r.Context(), IdempotencyRequest{
		Key: r.Header.Get(IdempotencyHeader), Method: r.Method, Target: requestTarget(r),
		IfNoneExist: r.Header.Get("If-None-Exist"), IfMatch: r.Header.Get("If-Match"), Body: body,
	})
}

// requestTarget is the path of a request with its query when it has one
// (the criteria of a conditional update or delete), so that one key
// cannot replay the answer of other criteria.
func requestTarget(r *http.Request) string {
	if r.URL.RawQuery == "" {
		return r.URL.Path
	}
	return r.URL.Path + "?" + r.URL.RawQuery
}

// keyedWrite runs one write interaction of a REST request (create,
// update, patch, delete, conditional forms) under the request's
// Idempotency-Key: a copy of a request whose change is recorded gets the
// first answer and writes nothing; any other request runs, its record
// going into the Commit of its change. body is what the request sent.
func (s *Server) keyedWrite(c echo.Context, body []byte, method string, run func(context.Context) (WriteResult, error)) error {
	ctx, release, err := s.beginIdempotent(c, body)
	if err != nil {
		return err
	}
	defer release()
	r, err := s.KeyedWrite(ctx, method, run)
	if err != nil {
		return err
	}
	return s.respondResult(c, r)
}
