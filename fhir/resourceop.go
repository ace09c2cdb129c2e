package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

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
	// RunType, when set, also serves the type level, GET or POST
	// [base]/Type/$Name: the server authorizes it as a search of the type
	// (the caller's decision and filter) and hands it the current
	// versions the caller may read, those named by the "id" parameters
	// (repeated or comma-separated, through the caller's view; an unknown
	// or hidden id is left out) or, without one, all of them up to
	// MaxTypeOperation; params are the other parameters.
	RunType func(ctx context.Context, recs []storage.Record, params url.Values) (map[string]any, error)
}

// MaxTypeOperation bounds the instances a type-level ResourceOperation
// is handed.
const MaxTypeOperation = 1000

// RunResourceOperation authorizes the instance as a read and runs op.
func (s *Server) RunResourceOperation(ctx context.Context, op ResourceOperation, rq ReadRequest) (ReadResult, error) {
	id := rq.Param("id")
	if !ValidID(id) {
		return ReadResult{}, newError(http.StatusNotFound, codeInvalid, "invalid resource id %q: R4 ids are 1-64 of [A-Za-z0-9-.]", id)
	}
	d, err := s.decide(ctx, ActionRead, op.Type)
	if err != nil {
		return ReadResult{}, err
	}
	v, err := s.view(ctx)
	if err != nil {
		return ReadResult{}, err
	}
	stored, err := s.storedID(ctx, v, op.Type, id)
	if err != nil {
		return ReadResult{}, err
	}
	rec, err := s.backend.Read(ctx, op.Type, stored)
	if errors.Is(err, storage.ErrNotFound) {
		return ReadResult{}, errNotFound("%s/%s is not known", op.Type, id)
	}
	if err != nil {
		return ReadResult{}, fmt.Errorf("reading %s/%s: %w", op.Type, id, err)
	}
	if rec.Deleted {
		if err := s.deletedWithin(ctx, d, ActionRead, rec); err != nil {
			return ReadResult{}, err
		}
		return ReadResult{}, newError(http.StatusGone, codeDeleted, "%s/%s was deleted", op.Type, id)
	}
	if d.Filter != nil {
		res, err := decodeRecord(rec)
		if err != nil {
			return ReadResult{}, err
		}
		if err := s.within(d, ActionRead, op.Type, rec.ID, res); err != nil {
			return ReadResult{}, err
		}
	}
	q := url.Values{}
	for k, vs := range rq.Query {
		if k != "_format" && k != "_pretty" {
			q[k] = vs
		}
	}
	res, err := op.Run(ctx, rec, q)
	if err != nil {
		var fe *Error
		if errors.As(err, &fe) {
			return ReadResult{}, fe
		}
		return ReadResult{}, fmt.Errorf("$%s on %s/%s: %w", op.Name, op.Type, id, err)
	}
	return resourceResult(res)
}

// RunResourceTypeOperation finds the instances the caller may read, as a
// search of the type would, and runs op.RunType on them.
func (s *Server) RunResourceTypeOperation(ctx context.Context, op ResourceOperation, rq ReadRequest) (ReadResult, error) {
	d, err := s.decide(ctx, ActionSearch, op.Type)
	if err != nil {
		return ReadResult{}, err
	}
	v, err := s.view(ctx)
	if err != nil {
		return ReadResult{}, err
	}
	q := url.Values{}
	var ids []string
	idGiven := false
	for k, vs := range rq.Query {
		switch k {
		case "_format", "_pretty":
		case "id":
			for _, joined := range vs {
				for _, id := range strings.Split(joined, ",") {
					if id = strings.TrimSpace(id); id == "" {
						continue
					}
					if !ValidID(id) {
						return ReadResult{}, newError(http.StatusBadRequest, codeInvalid, "id: %q is not a FHIR id", id)
					}
					stored, err := s.storedID(ctx, v, op.Type, id)
					var fe *Error
					if errors.As(err, &fe) && fe.Status == http.StatusNotFound {
						continue
					}
					if err != nil {
						return ReadResult{}, err
					}
					ids = append(ids, stored)
				}
			}
			idGiven = true
		default:
			q[k] = vs
		}
	}
	if idGiven && len(ids) == 0 {
		return s.runType(ctx, op, nil, q) // none the caller may know
	}
	var where []storage.Expr
	if len(ids) > 0 {
		where = append(where, storage.IDs{IDs: ids})
	}
	if d.Filter != nil {
		where = append(where, d.Filter)
	}
	sq := storage.Query{Types: []string{op.Type}, Count: MaxTypeOperation}
	if len(where) > 0 {
		sq.Filter = storage.And{Exprs: where}
	}
	page, err := s.backend.Search(ctx, sq)
	if err != nil {
		return ReadResult{}, fmt.Errorf("$%s on %s: finding the instances: %w", op.Name, op.Type, err)
	}
	return s.runType(ctx, op, page.Records, q)
}

func (s *Server) runType(ctx context.Context, op ResourceOperation, recs []storage.Record, q url.Values) (ReadResult, error) {
	if recs == nil {
		recs = []storage.Record{}
	}
	res, err := op.RunType(ctx, recs, q)
	if err != nil {
		var fe *Error
		if errors.As(err, &fe) {
			return ReadResult{}, fe
		}
		return ReadResult{}, fmt.Errorf("$%s on %s: %w", op.Name, op.Type, err)
	}
	return resourceResult(res)
}
