package fhir

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"

	jsonpatch "github.com/evanphx/json-patch/v5"

	"github.com/anodyne-fhir/anodyne/storage"
)

// patchResource applies ops to typ/id (want: the version If-Match
// requires, 0 for any).
func (s *Server) patchResource(ctx context.Context, typ, id string, want int64, ops jsonpatch.Patch) (WriteResult, error) {
	var (
		unchanged storage.Record
		canRead   bool
	)
	rec, wrote, err := s.writeWithRetry(ctx, "patch", typ, id, want, func(cur storage.Record, exists bool) (*storage.Write, error) {
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
		var res map[string]any
		if res, canRead, err = s.applyPatch(ctx, typ, id, ops, cur, old); err != nil {
			return nil, err
		}
		if res == nil {
			// Nothing changed: no new version, the current one is the answer.
			unchanged = cur
			return nil, nil
		}
		w, err := s.prepare(typ, id, res, cur.VersionID, now(), http.MethodPatch)
		if err != nil {
			return nil, err
		}
		if err := s.checkEntries(ctx, ActionUpdate, typ, id, w.Index); err != nil {
			return nil, err
		}
		return &w, nil
	}, func(w *storage.Write) idemResult {
		return idemResult{N: -1, Status: http.StatusOK, Type: typ, ID: id, Version: w.VersionID, Wrote: true, Minimal: !canRead}
	})
	if err != nil {
		return WriteResult{}, err
	}
	r := WriteResult{Method: http.MethodPatch, Status: http.StatusOK, Rec: rec, Wrote: wrote, Minimal: !canRead,
		Diagnostics: fmt.Sprintf("patched %s/%s to version %d", typ, id, rec.VersionID)}
	if !wrote {
		r.Rec = unchanged
		r.Diagnostics = fmt.Sprintf("the patch left %s/%s unchanged at version %d", typ, id, unchanged.VersionID)
	}
	return r, nil
}

// applyPatch authorizes and evaluates ops against the live version cur
// (decoded as old) for Server.patch and transaction entries alike. It
// answers the validated result, or nil when the patch changes nothing,
// and whether the caller may read the resource.
//
// A caller who may update but not read learns nothing of the content:
// test operations (an oracle on stored values) are refused before the
// patch is evaluated and failures carry no detail.
func (s *Server) applyPatch(ctx context.Context, typ, id string, ops jsonpatch.Patch, cur storage.Record, old map[string]any) (map[string]any, bool, error) {
	if err := s.checkResource(ctx, ActionUpdate, typ, id, old); err != nil {
		return nil, false, err
	}
	canRead, err := s.readable(ctx, typ, id, old)
	if err != nil {
		return nil, false, err
	}
	if !canRead && hasTestOp(ops) {
		return nil, false, newError(http.StatusForbidden, codeForbidden,
			"patch %s: a test operation needs read access to the resource", typ)
	}
	patched, err := ops.Apply(cur.JSON)
	if err != nil {
		if !canRead {
			return nil, false, newError(http.StatusUnprocessableEntity, codeProcessing, "the patch cannot be applied")
		}
		// http.html#patch: a patch that cannot be applied is 422.
		return nil, false, newError(http.StatusUnprocessableEntity, codeProcessing, "the patch cannot be applied: %v", err)
	}
	parsed, err := s.parseResource(ctx, typ, patched)
	if err != nil {
		var fe *Error
		if !canRead && errors.As(err, &fe) {
			// Validation messages quote the patched content.
			return nil, false, newError(http.StatusUnprocessableEntity, codeProcessing, "the patched resource is not valid")
		}
		if errors.As(err, &fe) && fe.Status == http.StatusBadRequest {
			// The request itself was well-formed: its result is what is invalid.
			fe.Status = http.StatusUnprocessableEntity
		}
		return nil, false, err
	}
	if parsed.ID != id {
		return nil, false, newError(http.StatusUnprocessableEntity, codeProcessing, "a patch must not change the resource id")
	}
	same, err := sameContent(old, parsed.Resource)
	if err != nil {
		return nil, false, err
	}
	if same {
		return nil, canRead, nil
	}
	return parsed.Resource, canRead, nil
}

// readable reports whether the caller may read res: a read scope on the
// type whose filter holds for it.
func (s *Server) readable(ctx context.Context, typ, id string, res map[string]any) (bool, error) {
	if s.authz == nil {
		return true, nil
	}
	d, err := s.authz.Decide(ctx, ActionRead, typ)
	if err != nil {
		return false, fmt.Errorf("authorizing read on %s: %w", typ, err)
	}
	if !d.Allowed {
		return false, nil
	}
	if d.Filter == nil {
		return true, nil
	}
	entries, err := s.registry.Index(typ, res)
	if err != nil {
		return false, fmt.Errorf("indexing %s/%s for authorization: %w", typ, id, err)
	}
	return permitted(d, id, entries)
}

func hasTestOp(ops jsonpatch.Patch) bool {
	for _, op := range ops {
		if op.Kind() == "test" {
			return true
		}
	}
	return false
}

// sameContent compares two resources in canonical JSON, ignoring the
// meta elements every new version sets (versionId, lastUpdated).
func sameContent(a, b map[string]any) (bool, error) {
	ea, err := EncodeResource(withoutVersionMeta(a))
	if err != nil {
		return false, fmt.Errorf("encoding for comparison: %w", err)
	}
	eb, err := EncodeResource(withoutVersionMeta(b))
	if err != nil {
		return false, fmt.Errorf("encoding for comparison: %w", err)
	}
	return bytes.Equal(ea, eb), nil
}

// withoutVersionMeta is a shallow copy of res without meta.versionId and
// meta.lastUpdated (and without meta when nothing else is left in it).
func withoutVersionMeta(res map[string]any) map[string]any {
	out := make(map[string]any, len(res))
	for k, v := range res {
		out[k] = v
	}
	meta, ok := res["meta"].(map[string]any)
	if !ok {
		return out
	}
	m := make(map[string]any, len(meta))
	for k, v := range meta {
		if k != "versionId" && k != "lastUpdated" {
			m[k] = v
		}
	}
	if len(m) == 0 {
		delete(out, "meta")
	} else {
		out["meta"] = m
	}
	return out
}
