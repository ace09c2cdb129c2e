package fhir

import (
	"context"
	"net/http"
	"net/url"

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
