package fhir

import (
	"context"
	"fmt"
	"net/http"

	"github.com/anodyne-fhir/anodyne/storage"
)

// deleteResource deletes typ/id (want: the version If-Match requires, 0
// for any).
func (s *Server) deleteResource(ctx context.Context, typ, id string, want int64) (WriteResult, error) {
	rec, wrote, err := s.writeWithRetry(ctx, "delete", typ, id, want, func(cur storage.Record, exists bool) (*storage.Write, error) {
		if !exists || cur.Deleted {
			if _, err := s.decide(ctx, ActionDelete, typ); err != nil {
				return nil, err
			}
			// Idempotent: success without a new version.
			return nil, nil
		}
		old, err := decodeRecord(cur)
		if err != nil {
			return nil, err
		}
		if err := s.checkResource(ctx, ActionDelete, typ, id, old); err != nil {
			return nil, err
		}
		return &storage.Write{
			Record: storage.Record{
				Type: typ, ID: id, VersionID: cur.VersionID + 1, LastUpdated: now(),
				Deleted: true, Method: http.MethodDelete,
			},
			ExpectVersion: cur.VersionID,
		}, nil
	}, func(w *storage.Write) idemResult {
		return idemResult{N: -1, Status: http.StatusNoContent, Type: typ, ID: id, Version: w.VersionID, Wrote: true}
	})
	if err != nil {
		return WriteResult{}, err
	}
	r := WriteResult{Method: http.MethodDelete, Status: http.StatusNoContent, Diagnostics: "nothing to delete"}
	if wrote {
		r.Rec, r.Wrote = rec, true
		r.Diagnostics = fmt.Sprintf("deleted %s/%s (version %d)", typ, id, rec.VersionID)
	}
	return r, nil
}
