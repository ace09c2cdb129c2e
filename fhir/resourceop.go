package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/anodyne-fhir/anodyne/storage"
)

// A ResourceOperation is an instance operation on one resource type
// computed by a package above this one (the subscription package's
// Subscription/{id}/$status): GET or POST [base]/Type/{id}/$Name. The
// server authorizes it exactly as a read of that instance (the caller's
// decision and filter, the output view's ids; 403, 404 and 410 as read
// answers them) and hands Run the current version. Its Definition is
// published at [base]/OperationDefinition/{id} and declared in the
// CapabilityStatement under the type.
type ResourceOperation struct {
	Type       string
	Name       string         // without the "$"
	Definition map[string]any // an OperationDefinition with id and url
	// Run computes the result (a Parameters resource or a Bundle) from the
	// instance and the parameters (query string, plus a POSTed form or
	// Parameters resource). A *Error it returns is the client's answer;
	// any other error is a 500. What it returns is sent as is: resources
	// it embeds must already have passed Emit.
	Run func(ctx context.Context, rec storage.Record, params url.Values) (map[string]any, error)
}

// resourceOperationRead authorizes the instance as a read and runs op.
func (s *Server) resourceOperationRead(ctx context.Context, op ResourceOperation, rq readRequest) (readResult, error) {
	id := rq.param("id")
	if !validID(id) {
		return readResult{}, newError(http.StatusNotFound, codeInvalid, "invalid resource id %q: R4 ids are 1-64 of [A-Za-z0-9-.]", id)
	}
	d, err := s.decide(ctx, ActionRead, op.Type)
	if err != nil {
		return readResult{}, err
	}
	v, err := s.view(ctx)
	if err != nil {
		return readResult{}, err
	}
	stored, err := s.storedID(ctx, v, op.Type, id)
	if err != nil {
		return readResult{}, err
	}
	rec, err := s.backend.Read(ctx, op.Type, stored)
	if errors.Is(err, storage.ErrNotFound) {
		return readResult{}, errNotFound("%s/%s is not known", op.Type, id)
	}
	if err != nil {
		return readResult{}, fmt.Errorf("reading %s/%s: %w", op.Type, id, err)
	}
	if rec.Deleted {
		if err := s.deletedWithin(ctx, d, ActionRead, rec); err != nil {
			return readResult{}, err
		}
		return readResult{}, newError(http.StatusGone, codeDeleted, "%s/%s was deleted", op.Type, id)
	}
	if d.Filter != nil {
		res, err := decodeRecord(rec)
		if err != nil {
			return readResult{}, err
		}
		if err := s.within(d, ActionRead, op.Type, rec.ID, res); err != nil {
			return readResult{}, err
		}
	}
	q := url.Values{}
	for k, vs := range rq.query {
		if k != "_format" && k != "_pretty" {
			q[k] = vs
		}
	}
	res, err := op.Run(ctx, rec, q)
	if err != nil {
		var fe *Error
		if errors.As(err, &fe) {
			return readResult{}, fe
		}
		return readResult{}, fmt.Errorf("$%s on %s/%s: %w", op.Name, op.Type, id, err)
	}
	return resourceResult(res)
}
