package fhir

import (
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"
)

// create handles POST [base]/[type]: the server assigns a new id (any id in
// the body is ignored, as http.html#create requires) and answers 201 with
// Location and ETag.
func (s *Server) create(c echo.Context) error {
	typ, err := resourceType(c)
	if err != nil {
		return err
	}
	body, err := s.readBody(c, mimeFHIRJSON, mimeJSON)
	if err != nil {
		return err
	}
	if criteria := c.Request().Header.Get("If-None-Exist"); criteria != "" {
		return s.createConditional(c, typ, body, criteria)
	}
	ctx := c.Request().Context()
	parsed, err := s.parseResource(ctx, typ, body)
	if err != nil {
		return err
	}
	id := randomID()
	w, err := s.prepare(typ, id, parsed.Resource, 0, now(), http.MethodPost)
	if err != nil {
		return err
	}
	if err := s.checkEntries(ctx, ActionCreate, typ, id, w.Index); err != nil {
		return err
	}
	rec, err := s.commitOne(ctx, w)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	return s.respondWrite(c, http.StatusCreated, rec, fmt.Sprintf("created %s/%s", typ, id))
}
