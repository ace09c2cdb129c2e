package fhir

import (
	"context"
	"net/http"
	"net/url"

	"github.com/anodyne-fhir/anodyne/storage"
)

// The read interactions as Go calls. A REST handler turns its request
// into a ReadRequest (readRequestOf), calls the interaction and answers
// the ReadResult (respondRead); a batch or transaction GET entry builds
// the same ReadRequest from its request.url and turns the result into a
// response entry. Failures are *Error values.

// ReadRequest is a read, vread, search, history or $everything as it
// reaches the engine.
type ReadRequest struct {
	// path holds the named segments of the URL: type, id, vid, comp.
	Path  map[string]string
	Query url.Values
	// strict is Prefer: handling=strict (unknown parameters are errors).
	Strict bool
	// Conditional read headers (http.html#cread).
	IfNoneMatch, IfModifiedSince string
	// body is the resource a POSTed operation works on ($validate); nil
	// when none was sent.
	Body []byte
}

func (r ReadRequest) Param(name string) string { return r.Path[name] }

// ReadResult is the answer of a read interaction.
type ReadResult struct {
	Status int    // 200, or 304 for a conditional read
	Raw    []byte // the resource or Bundle, encoded; nil with 304
	// rec is the version a read or vread served (ETag, Last-Modified);
	// nil for Bundles.
	Rec *storage.Record
	// hideModified: under a view the stored lastUpdated is not disclosed.
	HideModified bool
}

// ReadFunc is a read interaction.
type ReadFunc func(s *Server, ctx context.Context, r ReadRequest) (ReadResult, error)

// resourceResult encodes a resource (a Bundle, an operation's answer) as
// the result of an interaction.
func resourceResult(b map[string]any) (ReadResult, error) {
	raw, err := EncodeResource(b)
	if err != nil {
		return ReadResult{}, err
	}
	return ReadResult{Status: http.StatusOK, Raw: raw}, nil
}
