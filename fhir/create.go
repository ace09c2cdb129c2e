package fhir

import (
	"context"
	"fmt"
	"net/http"
)

// createResource stores body as a new resource of typ with a new id.
func (s *Server) createResource(ctx context.Context, typ string, body []byte) (WriteResult, error) {
	parsed, err := s.parseResource(ctx, typ, body)
	if err != nil {
		return WriteResult{}, err
	}
	id := randomID()
	w, err := s.prepare(typ, id, parsed.Resource, 0, now(), http.MethodPost)
	if err != nil {
		return WriteResult{}, err
	}
	if err := s.checkEntries(ctx, ActionCreate, typ, id, w.Index); err != nil {
		return WriteResult{}, err
	}
	rec, err := s.commitOne(markIdempotent(ctx, []idemResult{{N: -1, Status: http.StatusCreated, Type: typ, ID: id, Version: w.VersionID, Wrote: true}}), w)
	if err != nil {
		return WriteResult{}, fmt.Errorf("create: %w", err)
	}
	return WriteResult{Method: http.MethodPost, Status: http.StatusCreated, Rec: rec, Wrote: true,
		Diagnostics: fmt.Sprintf("created %s/%s", typ, id)}, nil
}
