package fhir

import (
	"context"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

// $validate (operation-resource-validate): the body is the resource, or a
// Parameters with a "resource" parameter. The answer is 200 with an
// OperationOutcome whatever the verdict, as the operation definition says:
// invalid content is a result, not a failed request.

// validateType handles POST [base]/[type]/$validate.
func (s *Server) validateType(c echo.Context) error {
	typ, err := resourceType(c)
	if err != nil {
		return err
	}
	body, err := s.readBody(c, mimeFHIRJSON, mimeJSON)
	if err != nil {
		return err
	}
	return writeResource(c, http.StatusOK, outcome(s.validateBody(c.Request().Context(), typ, "", body)))
}

// validateInstance handles POST [base]/[type]/[id]/$validate: the body
// when there is one (its id must be the URL's), else the stored version.
func (s *Server) validateInstance(c echo.Context) error {
	typ, id, err := instancePath(c, http.StatusNotFound)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if c.Request().ContentLength != 0 {
		body, err := s.readBody(c, mimeFHIRJSON, mimeJSON)
		if err != nil {
			return err
		}
		return writeResource(c, http.StatusOK, outcome(s.validateBody(ctx, typ, id, body)))
	}
	// The outcome of validating a stored resource quotes its content,
	// which a view would have shaped: a filtered caller cannot ask it.
	if v, err := s.view(ctx); err != nil {
		return err
	} else if v != nil {
		return errViewRefuses("$validate of a stored resource")
	}
	rec, err := s.backend.Read(ctx, typ, id)
	if errors.Is(err, storage.ErrNotFound) {
		return errNotFound("%s/%s is not known", typ, id)
	}
	if err != nil {
		return err
	}
	if rec.Deleted {
		return s.gone(ctx, ActionRead, rec)
	}
	res, err := decodeRecord(rec)
	if err != nil {
		return err
	}
	if err := s.checkResource(ctx, ActionRead, typ, id, res); err != nil {
		return err
	}
	return writeResource(c, http.StatusOK, outcome(s.validateBody(ctx, typ, id, rec.JSON)))
}

// validateBody validates a $validate input and returns every issue found.
func (s *Server) validateBody(ctx context.Context, typ, id string, body []byte) []conformance.Issue {
	if inner, ok := parametersResource(body); ok {
		raw, err := encodeResource(inner)
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
	return issues
}

// parametersResource returns the "resource" parameter of a Parameters
// body. A body that is not such a Parameters is validated as it is.
func parametersResource(body []byte) (map[string]any, bool) {
	v, err := decodeJSON(body)
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
