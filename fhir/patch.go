package fhir

import (
	"errors"
	"fmt"
	"net/http"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/storage"
)

// patch handles PATCH [base]/[type]/[id] with a JSON Patch (RFC 6902,
// application/json-patch+json). The patched resource goes through the
// same validation as an update and must keep its id and type.
func (s *Server) patch(c echo.Context) error {
	typ, id, want, err := writeTarget(c)
	if err != nil {
		return err
	}
	body, err := s.readBody(c, mimeJSONPatch)
	if err != nil {
		return err
	}
	ops, err := jsonpatch.DecodePatch(body)
	if err != nil {
		return newError(http.StatusBadRequest, codeStructure, "invalid JSON Patch document: %v", err)
	}
	ctx := c.Request().Context()
	rec, _, err := s.writeWithRetry(ctx, "patch", typ, id, want, func(cur storage.Record, exists bool) (*storage.Write, error) {
		if !exists {
			return nil, errNotFound("%s/%s is not known", typ, id)
		}
		if cur.Deleted {
			return nil, s.gone(ctx, ActionUpdate, cur)
		}
		old, err := decodeRecord(cur)
		if err != nil {
			return nil, err
		}
		if err := s.checkResource(ctx, ActionUpdate, typ, id, old); err != nil {
			return nil, err
		}
		patched, err := ops.Apply(cur.JSON)
		if err != nil {
			// http.html#patch: a patch that cannot be applied is 422.
			return nil, newError(http.StatusUnprocessableEntity, codeProcessing, "the patch cannot be applied: %v", err)
		}
		parsed, err := s.parseResource(ctx, typ, patched)
		if err != nil {
			var fe *Error
			if errors.As(err, &fe) && fe.Status == http.StatusBadRequest {
				// The request itself was well-formed: its result is what is invalid.
				fe.Status = http.StatusUnprocessableEntity
			}
			return nil, err
		}
		if parsed.ID != id {
			return nil, newError(http.StatusUnprocessableEntity, codeProcessing, "a patch must not change the resource id")
		}
		w, err := s.prepare(typ, id, parsed.Resource, cur.VersionID, now(), http.MethodPatch)
		if err != nil {
			return nil, err
		}
		if err := s.checkEntries(ctx, ActionUpdate, typ, id, w.Index); err != nil {
			return nil, err
		}
		return &w, nil
	})
	if err != nil {
		return err
	}
	return s.respondWrite(c, http.StatusOK, rec, fmt.Sprintf("patched %s/%s to version %d", typ, id, rec.VersionID))
}
