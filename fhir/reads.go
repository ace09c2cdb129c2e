package fhir

import (
	"context"
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/storage"
)

// The read interactions as Go calls. A REST handler turns its request
// into a readRequest (readRequestOf), calls the interaction and answers
// the readResult (respondRead); a batch or transaction GET entry builds
// the same readRequest from its request.url and turns the result into a
// response entry. Failures are *Error values.

// readRequest is a read, vread, search, history or $everything as it
// reaches the engine.
type readRequest struct {
	// path holds the named segments of the URL: type, id, vid, comp.
	path  map[string]string
	query url.Values
	// strict is Prefer: handling=strict (unknown parameters are errors).
	strict bool
	// Conditional read headers (http.html#cread).
	ifNoneMatch, ifModifiedSince string
	// body is the resource a POSTed operation works on ($validate); nil
	// when none was sent.
	body []byte
}

func (r readRequest) param(name string) string { return r.path[name] }

// readResult is the answer of a read interaction.
type readResult struct {
	status int    // 200, or 304 for a conditional read
	raw    []byte // the resource or Bundle, encoded; nil with 304
	// rec is the version a read or vread served (ETag, Last-Modified);
	// nil for Bundles.
	rec *storage.Record
	// hideModified: under a view the stored lastUpdated is not disclosed.
	hideModified bool
}

// readFunc is a read interaction.
type readFunc func(s *Server, ctx context.Context, r readRequest) (readResult, error)

// resourceResult encodes a resource (a Bundle, an operation's answer) as
// the result of an interaction.
func resourceResult(b map[string]any) (readResult, error) {
	raw, err := encodeResource(b)
	if err != nil {
		return readResult{}, err
	}
	return readResult{status: http.StatusOK, raw: raw}, nil
}

// readRequestOf is the readRequest of an HTTP request.
func readRequestOf(c echo.Context) readRequest {
	names, values := c.ParamNames(), c.ParamValues()
	path := make(map[string]string, len(names))
	for i, n := range names {
		if i < len(values) {
			path[n] = values[i]
		}
	}
	h := c.Request().Header
	return readRequest{
		path: path, query: c.QueryParams(), strict: preferToken(c, "handling") == "strict",
		ifNoneMatch: h.Get("If-None-Match"), ifModifiedSince: h.Get("If-Modified-Since"),
	}
}

// serveRead is the REST adapter of a read interaction.
func (s *Server) serveRead(c echo.Context, fn readFunc) error {
	return s.serveReadRequest(c, fn, readRequestOf(c))
}

// serveReadRequest is serveRead of a request the handler completed (a
// POSTed operation's parameters or body).
func (s *Server) serveReadRequest(c echo.Context, fn readFunc, rq readRequest) error {
	r, err := fn(s, c.Request().Context(), rq)
	if err != nil {
		return err
	}
	return respondRead(c, r)
}

// respondRead answers a readResult over HTTP.
func respondRead(c echo.Context, r readResult) error {
	if r.rec != nil {
		h := c.Response().Header()
		h.Set("ETag", etag(r.rec.VersionID))
		if !r.hideModified {
			h.Set(echo.HeaderLastModified, r.rec.LastUpdated.UTC().Format(http.TimeFormat))
		}
	}
	if r.status == http.StatusNotModified {
		return c.NoContent(http.StatusNotModified)
	}
	return writeRaw(c, r.status, r.raw)
}
