package fhir

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// maxWriteAttempts bounds the read-modify-commit loop of writes without
// If-Match: each retry re-reads the current version, so a concurrent write
// is never lost, only ordered before ours.
const maxWriteAttempts = 20

// backoff waits a little before retrying a write that lost a race, so that
// writers contending on one resource spread out instead of colliding again.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(1+mrand.IntN(1<<min(attempt, 6))) * time.Millisecond
	select {
	case <-ctx.Done():
		return fmt.Errorf("retrying write: %w", ctx.Err())
	case <-time.After(d):
		return nil
	}
}

// writeStep builds the write of one attempt from the version current at
// that attempt (exists is false for a resource never written). It returns
// a nil write when there is nothing to store; it runs again on each retry,
// so every check it makes is against the version the write replaces.
type writeStep func(cur storage.Record, exists bool) (*storage.Write, error)

// writeAnswer is what the write built by the last step answers once
// committed (status, version, minimal): the Idempotency-Key record that
// goes into the write's own Commit. It is called after that step.
type writeAnswer func(w *storage.Write) idemResult

// writeWithRetry is the optimistic read-modify-commit loop of the instance
// writes: read the current version, apply If-Match (want, 0 when absent),
// let step build the write, commit it against that version. A commit that
// lost a race is a 412 under If-Match (the client asked for that exact
// version), otherwise it is retried on the new current version, and 409
// after maxWriteAttempts. wrote is false when step had nothing to store.
// op names the interaction in storage errors; answer gives the
// Idempotency-Key record of a committed write (fhir/idempotency.go).
func (s *Server) writeWithRetry(ctx context.Context, op, typ, id string, want int64, step writeStep, answer writeAnswer) (rec storage.Record, wrote bool, err error) {
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		cur, exists, err := s.current(ctx, typ, id)
		if err != nil {
			return storage.Record{}, false, err
		}
		if want != 0 && (!exists || cur.VersionID != want) {
			return storage.Record{}, false, preconditionFailed(want, cur, exists)
		}
		w, err := step(cur, exists)
		if err != nil || w == nil {
			return storage.Record{}, false, err
		}
		rec, err := s.commitOne(markIdempotent(ctx, []idemResult{answer(w)}), *w)
		if errors.Is(err, storage.ErrVersionConflict) {
			if want != 0 {
				return storage.Record{}, false, preconditionFailed(want, cur, exists)
			}
			if err := backoff(ctx, attempt); err != nil {
				return storage.Record{}, false, err
			}
			continue
		}
		if err != nil {
			return storage.Record{}, false, fmt.Errorf("%s: %w", op, err)
		}
		return rec, true, nil
	}
	return storage.Record{}, false, newError(http.StatusConflict, codeConflict, "%s/%s is being changed concurrently; retry", typ, id)
}

// updateResource stores body as the next version of typ/id (want: the
// version If-Match requires, 0 for any).
func (s *Server) updateResource(ctx context.Context, typ, id string, want int64, body []byte) (WriteResult, error) {
	parsed, err := s.parseResource(ctx, typ, body)
	if err != nil {
		return WriteResult{}, err
	}
	switch parsed.ID {
	case id:
	case "":
		return WriteResult{}, errBadRequest("the resource has no id; update requires it to equal the URL id %q", id)
	default:
		return WriteResult{}, errBadRequest("the resource id %q does not match the URL id %q", parsed.ID, id)
	}
	// live is set by each attempt, so after the loop it describes the
	// version the committed write replaced: 200 for an update, 201 for a
	// create (also over a deleted resource).
	var live bool
	rec, _, err := s.writeWithRetry(ctx, "update", typ, id, want, func(cur storage.Record, exists bool) (*storage.Write, error) {
		live = exists && !cur.Deleted
		action := ActionCreate
		if live {
			// Both the version replaced and the new one must be inside the
			// caller's access: a write cannot move a resource out of reach.
			old, err := decodeRecord(cur)
			if err != nil {
				return nil, err
			}
			if err := s.checkResource(ctx, ActionUpdate, typ, id, old); err != nil {
				return nil, err
			}
			action = ActionUpdate
		}
		w, err := s.prepare(typ, id, parsed.Resource, cur.VersionID, now(), http.MethodPut)
		if err != nil {
			return nil, err
		}
		if err := s.checkEntries(ctx, action, typ, id, w.Index); err != nil {
			return nil, err
		}
		return &w, nil
	}, func(w *storage.Write) idemResult {
		status := http.StatusOK
		if !live {
			status = http.StatusCreated
		}
		return idemResult{N: -1, Status: status, Type: typ, ID: id, Version: w.VersionID, Wrote: true}
	})
	if err != nil {
		return WriteResult{}, err
	}
	status := http.StatusOK
	if !live {
		status = http.StatusCreated
	}
	return WriteResult{Method: http.MethodPut, Status: status, Rec: rec, Wrote: true,
		Diagnostics: fmt.Sprintf("stored %s/%s version %d", typ, id, rec.VersionID)}, nil
}
