package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
)

// Media types this server reads and writes. XML is declined (406/415).
const (
	mimeFHIRJSON  = "application/fhir+json"
	mimeJSON      = "application/json"
	mimeJSONPatch = "application/json-patch+json"
	mimeForm      = "application/x-www-form-urlencoded"
)

// Context keys for what negotiation decided.
const (
	ctxMediaType = "fhir.mediatype"
	ctxPretty    = "fhir.pretty"
)

// negotiate is the middleware deciding the response format from _format,
// then Accept (http.html#mime-type). It answers 406 before any work is done
// when the client only accepts what we do not produce.
func negotiate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		q := c.QueryParams()
		if p := q.Get("_pretty"); p != "" {
			c.Set(ctxPretty, p == "true")
		}
		mt := mimeFHIRJSON
		if f := q.Get("_format"); f != "" {
			m, ok := formatParam(f)
			if !ok {
				return NewError(http.StatusNotAcceptable, CodeNotSupported, "_format %q is not supported; this server produces %s", f, mimeFHIRJSON)
			}
			mt = m
		} else if a := c.Request().Header.Get(echo.HeaderAccept); a != "" {
			m, ok := acceptable(a)
			if !ok {
				return NewError(http.StatusNotAcceptable, CodeNotSupported, "Accept %q is not supported; this server produces %s", a, mimeFHIRJSON)
			}
			mt = m
		}
		c.Set(ctxMediaType, mt)
		return next(c)
	}
}

func formatParam(f string) (string, bool) {
	// A "+" in a query string arrives as a space: "application/fhir json".
	switch strings.TrimSpace(strings.ReplaceAll(f, " ", "+")) {
	case "json", mimeFHIRJSON, "application/fhir+json;fhirVersion=4.0":
		return mimeFHIRJSON, true
	case mimeJSON:
		return mimeJSON, true
	}
	return "", false
}

// acceptable picks the response type from an Accept header; quality values
// are honoured only as far as q=0 meaning "not this".
func acceptable(accept string) (string, bool) {
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if params["q"] == "0" {
			continue
		}
		switch mt {
		case mimeFHIRJSON, "*/*", "application/*":
			return mimeFHIRJSON, true
		case mimeJSON:
			return mimeJSON, true
		}
	}
	return "", false
}

// readBody reads the request body after checking its media type against
// the allowed ones and capping its size (413). A missing Content-Type is
// read as the first allowed type: curl and many clients omit it.
func (s *Server) readBody(c echo.Context, allowed ...string) ([]byte, error) {
	r := c.Request()
	if ct := r.Header.Get(echo.HeaderContentType); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !slices.Contains(allowed, mt) {
			return nil, NewError(http.StatusUnsupportedMediaType, CodeNotSupported,
				"Content-Type %q is not accepted here; use %s", ct, strings.Join(allowed, " or "))
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), r.Body, s.MaxBodyBytes()))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, NewError(http.StatusRequestEntityTooLarge, CodeTooCostly, "request body exceeds %d bytes", s.MaxBodyBytes())
		}
		return nil, fmt.Errorf("reading request body: %w", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, NewError(http.StatusBadRequest, CodeStructure, "the request body is empty")
	}
	return body, nil
}

func responseType(c echo.Context) string {
	if mt, ok := c.Get(ctxMediaType).(string); ok {
		return mt
	}
	return mimeFHIRJSON
}

func pretty(c echo.Context) bool {
	p, _ := c.Get(ctxPretty).(bool)
	return p
}

// writeResource encodes a resource held as a map (json.Number values kept
// as written) and sends it.
func writeResource(c echo.Context, status int, res map[string]any) error {
	raw, err := EncodeResource(res)
	if err != nil {
		return fmt.Errorf("encoding response: %w", err)
	}
	return writeRaw(c, status, raw)
}

// writeRaw sends already-encoded resource JSON (as stored), indenting it
// when _pretty=true. Indent keeps every number's text.
func writeRaw(c echo.Context, status int, raw []byte) error {
	if pretty(c) {
		var b bytes.Buffer
		if err := json.Indent(&b, raw, "", "  "); err != nil {
			return fmt.Errorf("indenting response: %w", err)
		}
		raw = b.Bytes()
	}
	return c.Blob(status, responseType(c)+"; charset=utf-8", raw)
}
