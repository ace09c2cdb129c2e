package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

// A PatientOperation is an instance operation on Patient computed by a
// package above this one (clinical logic must not live here, and this
// package must not import it): GET [base]/Patient/{id}/$Name. The server
// authorizes it as it does $everything, read on the Patient, and hands
// the operation a PatientReader through which every further read passes
// the caller's decision. Its Definition is published at
// [base]/OperationDefinition/{id} and declared in the CapabilityStatement.
type PatientOperation struct {
	Name       string         // without the "$"
	Definition map[string]any // an OperationDefinition with id and url
	// Run computes the result (a Parameters resource, usually). A *Error
	// it returns is the client's answer; any other error is a 500.
	Run func(ctx context.Context, r *PatientReader, params url.Values) (map[string]any, error)
}

// maxPatientReads bounds what one PatientReader.Search may return.
const maxPatientReads = 5000

// PatientReader reads one patient's resources on behalf of the caller
// whose principal is on the context: every search is restricted to the
// patient's compartment and ANDed with the caller's filter, every read is
// checked against it.
type PatientReader struct {
	s     *Server
	id    string
	guard *guard
}

// PatientReader authorizes read access to Patient/id for the caller on
// ctx (403 outside the grant or under a View, 404 unknown, 410 deleted)
// and returns a reader of that patient's resources.
func (s *Server) PatientReader(ctx context.Context, id string) (*PatientReader, error) {
	if !ValidID(id) {
		return nil, errNotFound("%q is not a valid id", id)
	}
	// An operation computes from the stored resources and answers in its
	// own terms (references, dates, values), which no View rewrites: a
	// caller under a View (research access) is refused instead of being
	// answered past the output filter.
	v, err := s.view(ctx)
	if err != nil {
		return nil, err
	}
	if v != nil {
		return nil, newError(http.StatusForbidden, codeForbidden, "patient operations are not available under the %s view", v.Name())
	}
	d, err := s.decide(ctx, ActionRead, "Patient")
	if err != nil {
		return nil, err
	}
	rec, err := s.backend.Read(ctx, "Patient", id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errNotFound("Patient/%s is not known", id)
	}
	if err != nil {
		return nil, fmt.Errorf("reading Patient/%s: %w", id, err)
	}
	if rec.Deleted {
		if err := s.deletedWithin(ctx, d, ActionRead, rec); err != nil {
			return nil, err
		}
		return nil, newError(http.StatusGone, codeDeleted, "Patient/%s was deleted", id)
	}
	res, err := decodeRecord(rec)
	if err != nil {
		return nil, err
	}
	if err := s.within(d, ActionRead, "Patient", id, res); err != nil {
		return nil, err
	}
	return &PatientReader{s: s, id: id, guard: s.newGuard(ActionRead)}, nil
}

// PatientID is the patient's logical id.
func (r *PatientReader) PatientID() string { return r.id }

// Search returns the patient's resources of typ that match params
// (code=value pairs of typ's search parameters, "code:modifier" allowed),
// as decoded JSON. A caller who may not search typ gets a 403 *Error.
func (r *PatientReader) Search(ctx context.Context, typ string, params url.Values) ([]map[string]any, error) {
	if !isResourceType(typ) {
		return nil, fmt.Errorf("PatientReader.Search: %q is not a resource type", typ)
	}
	d, err := r.s.decide(ctx, ActionSearch, typ)
	if err != nil {
		return nil, err
	}
	comp := r.s.compartmentFilter("Patient", r.id, typ)
	if comp == nil {
		return nil, fmt.Errorf("PatientReader.Search: %s is not in the Patient compartment", typ)
	}
	filters := []storage.Expr{comp}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		code, mod, _ := strings.Cut(k, ":")
		e, err := r.s.registry.Compile(typ, code, mod, params[k])
		if err != nil {
			return nil, fmt.Errorf("PatientReader.Search %s?%s: %w", typ, k, err)
		}
		filters = append(filters, e)
	}
	if d.Filter != nil {
		filters = append(filters, d.Filter)
	}
	q := storage.Query{Types: []string{typ}, Filter: storage.And{Exprs: filters}, Count: 500}
	var out []map[string]any
	for {
		page, err := r.s.backend.Search(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("searching the %s of Patient/%s: %w", typ, r.id, err)
		}
		for _, rec := range page.Records {
			res, err := decodeRecord(rec)
			if err != nil {
				return nil, err
			}
			out = append(out, res)
		}
		if len(out) > maxPatientReads {
			return nil, newError(http.StatusRequestEntityTooLarge, codeTooCostly, "Patient/%s has more than %d %s resources", r.id, maxPatientReads, typ)
		}
		if page.Next == "" {
			return out, nil
		}
		q.Cursor = page.Next
	}
}

// Read returns the resource a local reference ("Medication/123") points
// to, or nil when it does not exist, is deleted, or is outside what the
// caller may read: the operation then reports it as not available
// without learning which.
func (r *PatientReader) Read(ctx context.Context, ref string) (map[string]any, error) {
	ref = strings.TrimPrefix(ref, r.s.base+"/")
	typ, id, ok := strings.Cut(ref, "/")
	if !ok || !isResourceType(typ) || !ValidID(id) {
		return nil, nil
	}
	rec, err := r.s.backend.Read(ctx, typ, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", ref, err)
	}
	if rec.Deleted {
		return nil, nil
	}
	allowed, err := r.guard.allows(ctx, rec)
	if err != nil || !allowed {
		return nil, err
	}
	return decodeRecord(rec)
}

// RunPatientOperation runs a patient operation.
func (s *Server) RunPatientOperation(ctx context.Context, op PatientOperation, rq ReadRequest) (ReadResult, error) {
	id := rq.Param("id")
	if !ValidID(id) {
		return ReadResult{}, newError(http.StatusNotFound, codeInvalid, "invalid resource id %q: R4 ids are 1-64 of [A-Za-z0-9-.]", id)
	}
	r, err := s.PatientReader(ctx, id)
	if err != nil {
		return ReadResult{}, err
	}
	q := url.Values{}
	for k, v := range rq.Query {
		if k != "_format" && k != "_pretty" {
			q[k] = v
		}
	}
	res, err := op.Run(ctx, r, q)
	if err != nil {
		var fe *Error
		if errors.As(err, &fe) {
			return ReadResult{}, fe
		}
		return ReadResult{}, fmt.Errorf("$%s on Patient/%s: %w", op.Name, id, err)
	}
	return resourceResult(res)
}

// ReadOperationDefinition is the read of OperationDefinition/{id}, as
// the REST handler and a batch or transaction GET entry run it: the
// definitions the server declares, else the stored resource.
func (s *Server) ReadOperationDefinition(ctx context.Context, r ReadRequest) (ReadResult, error) {
	builtin := map[string]func() (map[string]any, error){
		"Observation-lastn": lastnDefinition,
		"observation-stats": statsDefinition,
	}
	id := r.Param("id")
	if load, ok := builtin[id]; ok {
		def, err := load()
		if err != nil {
			return ReadResult{}, err
		}
		return resourceResult(def)
	}
	for _, op := range s.patientOps {
		if opID, _ := op.Definition["id"].(string); opID != "" && opID == id {
			return resourceResult(op.Definition)
		}
	}
	for _, op := range s.resOps {
		if opID, _ := op.Definition["id"].(string); opID != "" && opID == id {
			return resourceResult(op.Definition)
		}
	}
	return s.Read(ctx, r)
}

// OperationError is a failure an operation reports to the client: the
// HTTP status and a diagnostic for the OperationOutcome.
func OperationError(status int, format string, args ...any) error {
	code := codeProcessing
	switch status {
	case http.StatusBadRequest:
		code = codeInvalid
	case http.StatusForbidden:
		code = codeForbidden
	case http.StatusNotFound:
		code = codeNotFound
	}
	return newError(status, code, format, args...)
}
