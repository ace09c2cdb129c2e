package fhir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/lease"
)

// Custom search parameters.
//
// A SearchParameter resource written over the REST API is stored like any
// other resource; a background loop (RunSearchParameters) notices it,
// registers it in the registry (from then on every write indexes it) and
// reindexes the existing resources of its base types. Polling the store
// rather than hooking the create handler means every replica behind a load
// balancer registers the parameter, whichever replica received the write.
// The reindexing of one SearchParameter version runs in one replica at a
// time, under the lease spLeaseKey<id>/<version> (storage/lease): the
// replica holding it checkpoints within pages (fhir/reindex.go), and if it
// dies another replica takes the lease over once it expires and resumes
// from that checkpoint. Reindexing a resource twice is harmless (the
// entries are recomputed from the same version), so a batch redone after
// a kill costs time, not correctness; a holder that loses its lease stops
// between two resources and checkpoints where it stopped.
//
// Progress is kept in the KV under searchparameter/status/<id> and served
// at GET [base]/SearchParameter/[id]/$reindex-status as a Parameters
// resource (state reindexing | active | failed, done, version, error). A
// search on the parameter works at once but only sees the resources
// reindexed so far; clients that need completeness wait for "active".
// The server-defined parameters (resources.ServerParams) are reindexed by
// the same loop, once per shipped version (reindexServerParams).

const (
	spStatusKey  = "searchparameter/status/"
	spLeaseKey   = "searchparameter/lease/"
	reindexBatch = 200
	// reindexCheckpointEvery bounds the resources done between two
	// checkpoints (a checkpoint is also written when a third of the
	// lease has passed since the last one).
	reindexCheckpointEvery = 50
	spStateWorking         = "reindexing"
	spStateActive          = "active"
	spStateFailed          = "failed"
)

// spStatus is the reindexing state of one SearchParameter version.
type spStatus struct {
	State   string    `json:"state"`
	Version int64     `json:"version"`
	Done    int       `json:"done"`
	Error   string    `json:"error,omitempty"`
	Updated time.Time `json:"updated"`
	// The checkpoint while reindexing: the index of the base type in
	// progress, the storage cursor of the page in progress ("" from the
	// start) and the id of the last resource done on that page ("" none).
	Base   int    `json:"base,omitempty"`
	Cursor string `json:"cursor,omitempty"`
	After  string `json:"after,omitempty"`
}

func (st spStatus) final() bool { return st.State == spStateActive || st.State == spStateFailed }

// RunSearchParameters registers SearchParameter resources as they appear
// in the store and reindexes existing resources for them, checking every
// interval, until ctx is cancelled (it then returns ctx.Err()). The caller
// (cmd/anodyne, tests) owns its lifetime: run it in a goroutine with the
// server's context.
func (s *Server) RunSearchParameters(ctx context.Context, interval time.Duration) error {
	// registered remembers, per SearchParameter id, the version registered
	// by this replica; settled the version whose reindexing is over (in
	// any replica). They live as long as the loop.
	registered, settled := map[string]int64{}, map[string]int64{}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.syncSearchParameters(ctx, registered, settled); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "search parameter sync", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (s *Server) syncSearchParameters(ctx context.Context, registered, settled map[string]int64) error {
	if err := s.reindexServerParams(ctx, settled); err != nil {
		return err
	}
	cursor := ""
	for {
		page, err := s.backend.Search(ctx, storage.Query{Types: []string{"SearchParameter"}, Count: 100, Cursor: cursor})
		if err != nil {
			return fmt.Errorf("listing SearchParameters: %w", err)
		}
		for _, rec := range page.Records {
			if settled[rec.ID] == rec.VersionID {
				continue
			}
			sp, err := decodeRecord(rec)
			if err != nil {
				return err
			}
			if registered[rec.ID] != rec.VersionID {
				registered[rec.ID] = rec.VersionID
				if err := s.registry.Add(sp); err != nil {
					settled[rec.ID] = rec.VersionID
					if err := s.putSPStatus(ctx, rec.ID, spStatus{State: spStateFailed, Version: rec.VersionID, Error: err.Error()}); err != nil {
						return err
					}
					continue
				}
				s.log.InfoContext(ctx, "search parameter registered", "id", rec.ID, "code", sp["code"])
			}
			done, err := s.reindexSearchParameter(ctx, rec, sp)
			if err != nil {
				return err
			}
			if done {
				settled[rec.ID] = rec.VersionID
			}
		}
		if page.Next == "" {
			return nil
		}
		cursor = page.Next
	}
}

// serverSPPrefix names the reindex state of a server-defined parameter
// (resources.ServerParams) in place of a stored SearchParameter's id; the
// colon is not valid in an id, so the two never meet.
const serverSPPrefix = "server:"

// reindexServerParams reindexes the resources stored before a
// server-defined parameter (or its current version) shipped, once per
// version across the processes on the store, as for a stored
// SearchParameter (lease, checkpoints, status under
// searchparameter/status/server:<id>).
func (s *Server) reindexServerParams(ctx context.Context, settled map[string]int64) error {
	for _, p := range s.registry.ServerParams() {
		id := serverSPPrefix + p.ID
		if settled[id] == p.Version {
			continue
		}
		done, err := s.reindexSearchParameter(ctx, storage.Record{ID: id, VersionID: p.Version}, p.Definition)
		if err != nil {
			return fmt.Errorf("reindexing for server search parameter %s: %w", p.ID, err)
		}
		if done {
			settled[id] = p.Version
		}
	}
	return nil
}

// reindexSearchParameter reindexes for one registered SearchParameter
// version if its reindexing is not over and no other replica holds its
// lease, resuming from the checkpoint. It reports whether the reindexing
// is over (here or elsewhere).
func (s *Server) reindexSearchParameter(ctx context.Context, rec storage.Record, sp map[string]any) (bool, error) {
	st, err := s.spStatus(ctx, rec.ID)
	if err != nil {
		return false, err
	}
	if st.Version == rec.VersionID && st.final() {
		return true, nil
	}
	key := fmt.Sprintf("%s%s/%d", spLeaseKey, rec.ID, rec.VersionID)
	var final bool
	held, err := lease.Hold(ctx, s.backend.KV(), key, s.leaseOwner, s.leaseTTL, func(lctx context.Context) error {
		var err error
		final, err = s.reindexHeld(lctx, rec, sp)
		return err
	})
	if errors.Is(err, lease.ErrLost) {
		s.log.WarnContext(ctx, "search parameter reindex: lease lost; another replica resumes it", "id", rec.ID, "err", err)
		return false, nil
	}
	if err != nil || !held {
		return false, err
	}
	return final, nil
}

// ReindexStatus is $reindex-status, as the REST handler and a batch
// or transaction GET entry run it.
func (s *Server) ReindexStatus(ctx context.Context, r ReadRequest) (ReadResult, error) {
	if r.Param("type") != "SearchParameter" {
		return ReadResult{}, errNotFound("$reindex-status applies to SearchParameter only")
	}
	id := r.Param("id")
	if !ValidID(id) {
		return ReadResult{}, newError(http.StatusNotFound, codeInvalid, "invalid resource id %q: R4 ids are 1-64 of [A-Za-z0-9-.]", id)
	}
	if _, err := s.decide(ctx, ActionRead, "SearchParameter"); err != nil {
		return ReadResult{}, err
	}
	raw, err := s.backend.KV().Get(ctx, spStatusKey+id)
	st := spStatus{State: "pending"}
	switch {
	case errors.Is(err, storage.ErrNotFound):
		if _, found, err := s.current(ctx, "SearchParameter", id); err != nil {
			return ReadResult{}, err
		} else if !found {
			return ReadResult{}, errNotFound("SearchParameter/%s is not known", id)
		}
	case err != nil:
		return ReadResult{}, fmt.Errorf("reading reindex status: %w", err)
	default:
		if err := json.Unmarshal(raw, &st); err != nil {
			return ReadResult{}, fmt.Errorf("decoding reindex status: %w", err)
		}
	}
	params := []any{
		map[string]any{"name": "state", "valueCode": st.State},
		map[string]any{"name": "done", "valueInteger": st.Done},
	}
	if st.Version > 0 {
		params = append(params, map[string]any{"name": "version", "valueString": fmt.Sprint(st.Version)})
	}
	if st.Error != "" {
		params = append(params, map[string]any{"name": "error", "valueString": st.Error})
	}
	return resourceResult(map[string]any{"resourceType": "Parameters", "parameter": params})
}
