package fhir

import (
	"context"
	"errors"
	"net/http"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/conformance/profile"
	"github.com/anodyne-fhir/anodyne/storage"
)

// $validate (operation-resource-validate): the body is the resource, or a
// Parameters with a "resource" parameter. The answer is 200 with an
// OperationOutcome whatever the verdict, as the operation definition says:
// invalid content is a result, not a failed request.

// ValidateType is $validate of the resource in r.Body, as the REST
// handler and a batch or transaction POST entry run it. It reads nothing
// stored, so it needs no decision.
func (s *Server) ValidateType(ctx context.Context, r ReadRequest) (ReadResult, error) {
	typ := r.Param("type")
	if !conformance.IsResourceType(typ) {
		return ReadResult{}, errNotFound("unknown resource type %q", typ)
	}
	return resourceResult(outcome(s.validateBody(ctx, typ, "", r.Body, r.Query.Get("profile"))))
}

// ValidateInstance is $validate of [type]/[id]: of r.Body when it is
// not nil, else of the stored version, which is read as the caller may.
func (s *Server) ValidateInstance(ctx context.Context, r ReadRequest) (ReadResult, error) {
	typ, id := r.Param("type"), r.Param("id")
	if !conformance.IsResourceType(typ) {
		return ReadResult{}, errNotFound("unknown resource type %q", typ)
	}
	if !ValidID(id) {
		return ReadResult{}, newError(http.StatusNotFound, codeInvalid, "invalid resource id %q: R4 ids are 1-64 of [A-Za-z0-9-.]", id)
	}
	if r.Body != nil {
		return resourceResult(outcome(s.validateBody(ctx, typ, id, r.Body, r.Query.Get("profile"))))
	}
	// The outcome of validating a stored resource quotes its content,
	// which a view would have shaped: a filtered caller cannot ask it.
	if v, err := s.view(ctx); err != nil {
		return ReadResult{}, err
	} else if v != nil {
		return ReadResult{}, errViewRefuses("$validate of a stored resource")
	}
	rec, err := s.backend.Read(ctx, typ, id)
	if errors.Is(err, storage.ErrNotFound) {
		return ReadResult{}, errNotFound("%s/%s is not known", typ, id)
	}
	if err != nil {
		return ReadResult{}, err
	}
	if rec.Deleted {
		return ReadResult{}, s.gone(ctx, ActionRead, rec)
	}
	res, err := decodeRecord(rec)
	if err != nil {
		return ReadResult{}, err
	}
	if err := s.checkResource(ctx, ActionRead, typ, id, res); err != nil {
		return ReadResult{}, err
	}
	return resourceResult(outcome(s.validateBody(ctx, typ, id, rec.JSON, r.Query.Get("profile"))))
}

// validateBody validates a $validate input and returns every issue found:
// structure, then the core definitions and invariants, the profiles the
// resource claims and the one the request names (?profile= or the
// Parameters "profile").
func (s *Server) validateBody(ctx context.Context, typ, id string, body []byte, profileURL string) []conformance.Issue {
	if p := parametersProfile(body); p != "" && profileURL == "" {
		profileURL = p
	}
	if inner, ok := parametersResource(body); ok {
		raw, err := EncodeResource(inner)
		if err != nil {
			return []conformance.Issue{{Severity: "error", Code: codeStructure, Diagnostics: err.Error(), Expression: "Parameters.parameter.resource"}}
		}
		body = raw
	}
	parsed, issues := s.validator.Validate(ctx, body)
	if conformance.HasErrors(issues) {
		return issues
	}
	if parsed.Type != typ {
		issues = append(issues, conformance.Issue{Severity: "error", Code: codeInvalid,
			Diagnostics: "the resource is a " + parsed.Type + ", not a " + typ, Expression: parsed.Type})
	}
	if id != "" && parsed.ID != id {
		issues = append(issues, conformance.Issue{Severity: "error", Code: codeInvalid,
			Diagnostics: "the resource id " + parsed.ID + " is not the URL id " + id, Expression: parsed.Type + ".id"})
	}
	if s.profiles != nil && parsed.Resource != nil {
		opts := profile.Options{Fetch: s.profileFetcher, Resolve: s.referenceTarget}
		if profileURL != "" {
			opts.Profiles = []string{profileURL}
		}
		issues = append(issues, s.profiles.Validate(ctx, parsed.Resource, opts)...)
	} else if profileURL != "" {
		issues = append(issues, conformance.Issue{Severity: "error", Code: codeNotSupp,
			Diagnostics: "profile validation is not enabled on this server", Expression: parsed.Type})
	}
	return issues
}

// parametersProfile returns the "profile" parameter of a Parameters body.
func parametersProfile(body []byte) string {
	v, err := DecodeJSON(body)
	if err != nil {
		return ""
	}
	m, _ := v.(map[string]any)
	if m["resourceType"] != "Parameters" {
		return ""
	}
	list, _ := m["parameter"].([]any)
	for _, p := range list {
		pm, _ := p.(map[string]any)
		if pm["name"] != "profile" {
			continue
		}
		for _, k := range []string{"valueUri", "valueCanonical", "valueString", "valueUrl"} {
			if u, ok := pm[k].(string); ok {
				return u
			}
		}
	}
	return ""
}

// parametersResource returns the "resource" parameter of a Parameters
// body. A body that is not such a Parameters is validated as it is.
func parametersResource(body []byte) (map[string]any, bool) {
	v, err := DecodeJSON(body)
	if err != nil {
		return nil, false
	}
	m, _ := v.(map[string]any)
	if m["resourceType"] != "Parameters" {
		return nil, false
	}
	list, _ := m["parameter"].([]any)
	for _, p := range list {
		pm, _ := p.(map[string]any)
		if pm["name"] == "resource" {
			if r, ok := pm["resource"].(map[string]any); ok {
				return r, true
			}
		}
	}
	return nil, false
}
