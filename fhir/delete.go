package fhir

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

// delete handles DELETE [base]/[type]/[id]. A delete is a new version with
// no content, so history keeps what was there and a later read is 410.
// Deleting what does not exist, or is already deleted, succeeds without a
// new version (http.html#delete: delete is idempotent).
func (s *Server) delete(c echo.Context) error {
	typ, err := resourceType(c)
	if err != nil {
		return err
	}
	id, err := pathID(c, http.StatusBadRequest)
	if err != nil {
		return err
	}
	want, err := ifMatch(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		cur, exists, err := s.current(ctx, typ, id)
		if err != nil {
			return err
		}
		if want != 0 && (!exists || cur.VersionID != want) {
			return preconditionFailed(want, cur, exists)
		}
		if !exists || cur.Deleted {
			if _, err := s.decide(ctx, ActionDelete, typ); err != nil {
				return err
			}
			return s.respondDelete(c, "nothing to delete")
		}
		old, err := decodeRecord(cur)
		if err != nil {
			return err
		}
		if err := s.checkResource(ctx, ActionDelete, typ, id, old); err != nil {
			return err
		}
		rec, err := s.commitOne(ctx, storage.Write{
			Record: storage.Record{
				Type: typ, ID: id, VersionID: cur.VersionID + 1, LastUpdated: now(),
				Deleted: true, Method: http.MethodDelete,
			},
			ExpectVersion: cur.VersionID,
		})
		if errors.Is(err, storage.ErrVersionConflict) {
			if want != 0 {
				return preconditionFailed(want, cur, exists)
			}
			if err := backoff(ctx, attempt); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("delete: %w", err)
		}
		c.Response().Header().Set("ETag", etag(rec.VersionID))
		return s.respondDelete(c, fmt.Sprintf("deleted %s/%s (version %d)", typ, id, rec.VersionID))
	}
	return newError(http.StatusConflict, codeConflict, "%s/%s is being changed concurrently; retry", typ, id)
}

func (s *Server) respondDelete(c echo.Context, diagnostics string) error {
	if preferReturn(c) == "OperationOutcome" {
		return writeResource(c, http.StatusOK, outcome([]conformance.Issue{{
			Severity: "information", Code: codeInfo, Diagnostics: diagnostics,
		}}))
	}
	return c.NoContent(http.StatusNoContent)
}
