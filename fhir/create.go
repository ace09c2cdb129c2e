package fhir

import (
	"context"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"
)

// create handles POST [base]/[type]: the server assigns a new id (any id in
// the body is ignored, as http.html#create requires) and answers 201 with
// Location and ETag. With If-None-Exist it is a conditional create.
func (s *Server) create(c echo.Context) error {
	typ, err := resourceType(c)
	if err != nil {
		return err
	}
	body, err := s.readBody(c, mimeFHIRJSON, mimeJSON)
	if err != nil {
		return err
	}
	return s.keyedWrite(c, body, http.MethodPost, func(ctx context.Context) (writeResult, error) {
		return s.write(ctx, writeRequest{
			method: http.MethodPost, typ: typ, body: body,
			ifNoneExist: c.Request().Header.Get("If-None-Exist"),
		})
	})
}

// createResource stores body as a new resource of typ with a new id.
func (s *Server) createResource(ctx context.Context, typ string, body []byte) (writeResult, error) {
	parsed, err := s.parseResource(ctx, typ, body)
	if err != nil {
		return writeResult{}, err
	}
	id := randomID()
	w, err := s.prepare(typ, id, parsed.Resource, 0, now(), http.MethodPost)
	if err != nil {
		return writeResult{}, err
	}
	if err := s.checkEntries(ctx, ActionCreate, typ, id, w.Index); err != nil {
		return writeResult{}, err
	}
	rec, err := s.commitOne(markIdempotent(ctx, []idemResult{{N: -1, Status: http.StatusCreated, Type: typ, ID: id, Version: w.VersionID, Wrote: true}}), w)
	if err != nil {
		return writeResult{}, fmt.Errorf("create: %w", err)
	}
	return writeResult{method: http.MethodPost, status: http.StatusCreated, rec: rec, wrote: true,
		diagnostics: fmt.Sprintf("created %s/%s", typ, id)}, nil
}
