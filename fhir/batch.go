package fhir

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// batch runs a batch Bundle: every entry is an independent interaction
// with its own response, dispatched through the server's own router (with
// the caller's credentials), so that each one goes through exactly the
// checks, authorization and conditional rules of the interaction it
// names. An entry that fails does not affect the others.
func (s *Server) batch(c echo.Context, entries []*txEntry, errs []error) error {
	ret := bundleReturn(c)
	out := newBundle("batch-response", nil)
	delete(out, "link")
	for i, e := range entries {
		if errs[i] != nil {
			addEntry(out, s.errorEntry(c, errs[i]))
			continue
		}
		addEntry(out, s.subEntry(c, e, ret))
	}
	return writeResource(c, http.StatusOK, out)
}

// errorEntry is the response entry of an entry that failed.
func (s *Server) errorEntry(c echo.Context, err error) map[string]any {
	fe := asError(c.Request().Context(), s.log, err)
	return map[string]any{"response": map[string]any{
		"status":  statusLine(fe.Status),
		"outcome": outcome(fe.Issues),
	}}
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
