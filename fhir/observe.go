package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// A CommitObserver sees every change before it is stored, whichever path
// made it: create, update, patch and delete with their conditional forms,
// transaction and batch entries, and Bulk import. It may enrich a change
// (set Observation.interpretation, record MME on a MedicationRequest) and
// add writes of its own (a Flag, a DetectedIssue, a subscription event);
// they all go into the same storage Commit as the change, so that an
// acknowledged change never loses what it derives, and a refused change
// leaves none of it behind.
//
// Observers run in the order of Config.Observers, each seeing the writes
// of the ones before it (a subscription observer placed last hears of the
// Flag a clinical observer raised). They must not commit anything
// themselves, and they run inside the write path: an error refuses the
// whole change, so an observer that cannot decide should say so in what it
// writes rather than fail the caller's write.
type CommitObserver interface {
	ObserveCommit(ctx context.Context, cs *CommitSet) error
}

// CommitObserverFunc adapts a function to CommitObserver.
type CommitObserverFunc func(ctx context.Context, cs *CommitSet) error

// ObserveCommit calls f.
func (f CommitObserverFunc) ObserveCommit(ctx context.Context, cs *CommitSet) error {
	return f(ctx, cs)
}

// CommitSet is the writes of one Commit while observers look at them.
type CommitSet struct {
	s       *Server
	at      time.Time
	writes  []storage.Write
	primary int      // writes[:primary] are the caller's; the rest derived
	held    []string // Serialize keys this set holds
	relock  []string // the keys to take in order when Serialize asked to start over
}

// Len is the number of writes so far, the caller's and derived ones.
func (cs *CommitSet) Len() int { return len(cs.writes) }

// Write returns write i (0 ≤ i < Len). Deletes have Deleted set and no JSON.
func (cs *CommitSet) Write(i int) storage.Write { return cs.writes[i] }

// Derived reports whether write i was added by an observer.
func (cs *CommitSet) Derived(i int) bool { return i >= cs.primary }

// Backend is the store, for reading what the change depends on (the
// patient's other prescriptions, earlier readings). Reads see the state
// before this Commit; the writes of the set are not visible through it.
func (cs *CommitSet) Backend() storage.Backend { return cs.s.backend }

// At is the time the change is stamped with.
func (cs *CommitSet) At() time.Time { return cs.at }

// Replace swaps the resource of write i for res (same type and id), with
// meta and index entries recomputed. It is how an observer enriches a
// change; the caller receives the enriched resource.
func (cs *CommitSet) Replace(i int, res map[string]any) error {
	w := cs.writes[i]
	if w.Deleted {
		return fmt.Errorf("observer replaced the delete of %s/%s", w.Type, w.ID)
	}
	if t, _ := res["resourceType"].(string); t != w.Type {
		return fmt.Errorf("observer replaced %s/%s with a %q", w.Type, w.ID, t)
	}
	nw, err := cs.s.prepare(w.Type, w.ID, res, w.ExpectVersion, w.LastUpdated, w.Method)
	if err != nil {
		return err
	}
	nw.Claim = w.Claim
	nw.Events = w.Events // what observers enqueued with it stays
	cs.writes[i] = nw
	return nil
}

// Put adds a derived create or update of res: version current+1 on top of
// current (0 for a new resource), which the Commit checks, so that two
// changes deriving the same resource at once cannot both win. The
// resource is not validated: observers build resources the server owns.
func (cs *CommitSet) Put(res map[string]any, current int64) error {
	typ, _ := res["resourceType"].(string)
	id, _ := res["id"].(string)
	if typ == "" || !ValidID(id) {
		return fmt.Errorf("observer wrote a resource without type or valid id (%q/%q)", typ, id)
	}
	method := http.MethodPut
	if current == 0 {
		method = http.MethodPost
	}
	w, err := cs.s.prepare(typ, id, res, current, cs.at, method)
	if err != nil {
		return err
	}
	cs.writes = append(cs.writes, w)
	return nil
}

// Enqueue appends events to the durable outbox with write i: they are
// stored by the same Commit, take its Seq (so a stream follows commit
// order) and vanish with it when the change is refused. Delivery is the
// enqueuer's business (see storage.Outbox).
func (cs *CommitSet) Enqueue(i int, events ...storage.Event) {
	cs.writes[i].Events = append(cs.writes[i].Events, events...)
}

// observe runs the observers over writes and returns them with what the
// observers changed and added, and the function that releases the keys
// they serialized on (CommitSet.Serialize): call it once the Commit
// returned. Every path to storage.Backend.Commit of resource changes
// calls it.
func (s *Server) observe(ctx context.Context, writes []storage.Write) ([]storage.Write, func(), error) {
	if len(s.observers) == 0 || len(writes) == 0 {
		return writes, func() {}, nil
	}
	var keys []string
	for {
		cs := &CommitSet{s: s, at: writes[0].LastUpdated, writes: append([]storage.Write(nil), writes...), primary: len(writes)}
		if err := cs.lockAll(ctx, keys); err != nil {
			return nil, nil, err
		}
		err := s.runObservers(ctx, cs)
		if errors.Is(err, errRelock) {
			keys = slices.Compact(slices.Sorted(slices.Values(cs.relock)))
			cs.release(ctx)
			continue
		}
		if err != nil {
			cs.release(ctx)
			return nil, nil, err
		}
		return cs.writes, func() { cs.release(ctx) }, nil
	}
}

func (s *Server) runObservers(ctx context.Context, cs *CommitSet) error {
	for _, o := range s.observers {
		if err := o.ObserveCommit(ctx, cs); err != nil {
			return fmt.Errorf("commit observer %T: %w", o, err)
		}
	}
	return nil
}
