package fhir

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth"
)

// batch runs a batch Bundle: every entry is an independent interaction
// with its own response, run by the same Go calls as the REST handlers
// (with the caller's identity, which is on the context), so that each one
// goes through exactly the checks, authorization and conditional rules of
// the interaction it names. An entry that fails does not affect the
// others. Each entry is audited as a request of its own.
func (s *Server) batch(c echo.Context, entries []*txEntry, errs []error) error {
	ret := bundleReturn(c)
	out := newBundle("batch-response", nil)
	delete(out, "link")
	for i, e := range entries {
		if errs[i] != nil {
			addEntry(out, s.errorEntry(c, errs[i]))
			continue
		}
		if e.method == http.MethodGet || e.method == http.MethodHead {
			addEntry(out, s.subEntry(c, e, ret))
			continue
		}
		addEntry(out, s.batchWrite(c, e, ret))
	}
	return writeResource(c, http.StatusOK, out)
}

// batchWrite runs one write entry of a batch and answers its response entry.
func (s *Server) batchWrite(c echo.Context, e *txEntry, ret string) map[string]any {
	target := e.typ
	if e.id != "" {
		target += "/" + e.id
	}
	if e.query != nil {
		target += "?" + e.query.Encode()
	}
	ctx, audited := auth.AuditEntry(c.Request().Context(), e.method, target)
	req := writeRequest{method: e.method, typ: e.typ, id: e.id, query: e.query,
		ifNoneExist: e.ifNoneExist, ifMatch: e.ifMatch, body: e.raw}
	var entry map[string]any
	status := http.StatusOK
	if e.method == http.MethodPatch {
		ops, _, err := binaryPatch(e.raw)
		if err != nil {
			entry, status = s.failedEntry(ctx, entryError(e, err))
			audited(status)
			return entry
		}
		req.patch = ops
	}
	r, err := s.write(ctx, req)
	if err == nil {
		entry, err = s.writeEntry(ctx, r, ret)
		status = r.status
	}
	if err != nil {
		entry, status = s.failedEntry(ctx, entryError(e, err))
	}
	audited(status)
	return entry
}

// errorEntry is the response entry of an entry that failed.
func (s *Server) errorEntry(c echo.Context, err error) map[string]any {
	entry, _ := s.failedEntry(c.Request().Context(), err)
	return entry
}

// failedEntry is the response entry of a failure, and its status.
func (s *Server) failedEntry(ctx context.Context, err error) (map[string]any, int) {
	fe := asError(ctx, s.log, err)
	return map[string]any{"response": map[string]any{
		"status":  statusLine(fe.Status),
		"outcome": outcome(fe.Issues),
	}}, fe.Status
}

// subEntry evaluates one entry as a request to this server and turns the
// answer into a response entry.
func (s *Server) subEntry(c echo.Context, e *txEntry, ret string) map[string]any {
	outer := c.Request()
	target := e.target
	var body []byte
	hdr := http.Header{}
	switch e.method {
	case http.MethodGet, http.MethodHead:
		if e.ifNoneMatch != "" {
			hdr.Set("If-None-Match", e.ifNoneMatch)
		}
		if e.ifModifiedSince != "" {
			hdr.Set("If-Modified-Since", e.ifModifiedSince)
		}
	default:
		target = e.typ
		if e.id != "" {
			target += "/" + e.id
		}
		if e.query != nil {
			target += "?" + e.query.Encode()
		}
		body = e.raw
		hdr.Set(echo.HeaderContentType, mimeFHIRJSON)
		if e.method == http.MethodPatch {
			_, data, err := binaryPatch(e.raw)
			if err != nil {
				return s.errorEntry(c, entryError(e, err))
			}
			body = data
			hdr.Set(echo.HeaderContentType, mimeJSONPatch)
		}
		if e.ifMatch != 0 {
			hdr.Set("If-Match", etag(e.ifMatch))
		}
		if e.ifNoneExist != "" {
			hdr.Set("If-None-Exist", e.ifNoneExist)
		}
		r := ret
		if r == "" {
			r = "minimal"
		}
		hdr.Set("Prefer", "return="+r)
	}
	req, err := http.NewRequestWithContext(outer.Context(), e.method, "/fhir/"+target, bytes.NewReader(body))
	if err != nil {
		return s.errorEntry(c, entryError(e, errBadRequest("request.url %q: %v", e.url, err)))
	}
	req.Header = hdr
	// The entry acts with the caller's identity; the middleware checks it
	// again, as for any request.
	for _, h := range []string{echo.HeaderAuthorization, "Cookie"} {
		if v := outer.Header.Values(h); len(v) > 0 {
			req.Header[h] = v
		}
	}
	req.Header.Set(echo.HeaderAccept, mimeFHIRJSON)
	if id := requestID(outer.Context()); id != "" && len(id) < 54 {
		req.Header.Set(echo.HeaderXRequestID, id+"."+strconv.Itoa(e.n))
	}
	req.RemoteAddr = outer.RemoteAddr
	rec := httptest.NewRecorder()
	s.echo.ServeHTTP(rec, req)

	resp := map[string]any{"status": statusLine(rec.Code)}
	out := map[string]any{"response": resp}
	h := rec.Header()
	if v := h.Get(echo.HeaderLocation); v != "" {
		resp["location"] = v
		if i := strings.Index(v, "/_history/"); i > 0 {
			out["fullUrl"] = v[:i]
		}
	}
	if v := h.Get("ETag"); v != "" {
		resp["etag"] = v
	}
	if v := h.Get(echo.HeaderLastModified); v != "" {
		if t, err := http.ParseTime(v); err == nil {
			resp["lastModified"] = formatInstant(t)
		}
	}
	raw := rec.Body.Bytes()
	if len(bytes.TrimSpace(raw)) == 0 || e.method == http.MethodHead {
		return out
	}
	isOutcome := bytes.Contains(raw[:min(len(raw), 64)], []byte(`"OperationOutcome"`))
	switch {
	case rec.Code >= 400 || isOutcome:
		resp["outcome"] = json.RawMessage(raw)
	default:
		out["resource"] = json.RawMessage(raw)
	}
	return out
}
