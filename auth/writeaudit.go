package auth

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// AuditPreparer is an AuditSink that can also hand back the storage write
// of an event's record instead of storing it, so that the record of a
// write is committed in the same storage Commit as the data: a crash can
// then never leave a change without its AuditEvent, nor an AuditEvent
// claiming a change that was not made.
type AuditPreparer interface {
	AuditSink
	PrepareAudit(ev AuditEvent) (storage.Write, error)
}

// writeAudit is the per-request state that AuditMiddleware puts on the
// context when its sink is an AuditPreparer.
type writeAudit struct {
	prep AuditPreparer
	base AuditEvent // who, from where, which interaction: filled before the handler runs

	mu        sync.Mutex
	committed int // Commits that carried this request's AuditEvent and succeeded
}

type writeAuditKey struct{}

// AuditWrites returns writes with the AuditEvent that records them
// appended, when the request is audited by a sink able to commit with the
// data; otherwise writes unchanged (the middleware then records the
// request itself, in a Commit of its own). The caller must commit all the
// returned writes in one atomic Commit and call done with its error.
//
// Only the caller knows whether its backend commits several writes
// atomically; one that cannot must not call AuditWrites.
func AuditWrites(ctx context.Context, writes []storage.Write) ([]storage.Write, func(error), error) {
	wa, _ := ctx.Value(writeAuditKey{}).(*writeAudit)
	if wa == nil || len(writes) == 0 {
		return writes, func(error) {}, nil
	}
	ev := wa.base
	ev.Time = time.Now().UTC()
	ev.IDs = nil
	ev.Patients = append([]string(nil), wa.base.Patients...)
	ev.Outcome = http.StatusOK
	for _, w := range writes {
		ev.Refs = append(ev.Refs, w.Type+"/"+w.ID)
		if w.VersionID == 1 && !w.Deleted {
			ev.Outcome = http.StatusCreated
		}
		for _, p := range writtenPatients(w) {
			if !contains(ev.Patients, p) {
				ev.Patients = append(ev.Patients, p)
			}
		}
	}
	aw, err := wa.prep.PrepareAudit(ev)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: preparing the AuditEvent of %d writes: %w", len(writes), err)
	}
	out := make([]storage.Write, 0, len(writes)+1)
	out = append(append(out, writes...), aw)
	return out, func(err error) {
		if err == nil {
			wa.mu.Lock()
			wa.committed++
			wa.mu.Unlock()
		}
	}, nil
}

// writtenPatients are the patients whose data a write touches: the
// Patient itself, or the patient its subject/patient reference names.
func writtenPatients(w storage.Write) []string {
	if w.Type == "Patient" {
		return []string{w.ID}
	}
	var out []string
	for _, e := range w.Index {
		if (e.Param == "patient" || e.Param == "subject") && e.Kind == storage.KindReference && e.RefType == "Patient" && e.RefID != "" && !contains(out, e.RefID) {
			out = append(out, e.RefID)
		}
	}
	return out
}

func (wa *writeAudit) done() int {
	wa.mu.Lock()
	defer wa.mu.Unlock()
	return wa.committed
}
