package fhir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Custom search parameters.
//
// A SearchParameter resource written over the REST API is stored like any
// other resource; a background loop (RunSearchParameters) notices it,
// registers it in the registry (from then on every write indexes it) and
// reindexes the existing resources of its base types. Polling the store
// rather than hooking the create handler means every replica behind a load
// balancer registers the parameter, whichever replica received the write;
// a KV lease makes only one of them do the reindexing.
//
// Progress is kept in the KV under searchparameter/status/<id> and served
// at GET [base]/SearchParameter/[id]/$reindex-status as a Parameters
// resource (state reindexing | active | failed, done, version, error). A
// search on the parameter works at once but only sees the resources
// reindexed so far; clients that need completeness wait for "active".

const (
	spStatusKey = "searchparameter/status/"
	spLeaseKey  = "searchparameter/lease/"
	// spLease bounds how long a replica that died mid-reindex blocks the
	// others: after it, another replica takes the job over.
	spLease        = 10 * time.Minute
	reindexBatch   = 200
	spStateWorking = "reindexing"
	spStateActive  = "active"
	spStateFailed  = "failed"
)

// spStatus is the reindexing state of one SearchParameter version.
type spStatus struct {
	State   string    `json:"state"`
	Version int64     `json:"version"`
	Done    int       `json:"done"`
	Error   string    `json:"error,omitempty"`
	Updated time.Time `json:"updated"`
}

// RunSearchParameters registers SearchParameter resources as they appear
// in the store and reindexes existing resources for them, checking every
// interval, until ctx is cancelled (it then returns ctx.Err()). The caller
// (cmd/anodyne, tests) owns its lifetime: run it in a goroutine with the
// server's context.
func (s *Server) RunSearchParameters(ctx context.Context, interval time.Duration) error {
	// handled remembers, per SearchParameter id, the version registered by
	// this replica; it lives as long as the loop.
	handled := map[string]int64{}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.syncSearchParameters(ctx, handled); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "search parameter sync", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (s *Server) syncSearchParameters(ctx context.Context, handled map[string]int64) error {
	cursor := ""
	for {
		page, err := s.backend.Search(ctx, storage.Query{Types: []string{"SearchParameter"}, Count: 100, Cursor: cursor})
		if err != nil {
			return fmt.Errorf("listing SearchParameters: %w", err)
		}
		for _, rec := range page.Records {
			if handled[rec.ID] == rec.VersionID {
				continue
			}
			handled[rec.ID] = rec.VersionID
			if err := s.activateSearchParameter(ctx, rec); err != nil {
				return err
			}
		}
		if page.Next == "" {
			return nil
		}
		cursor = page.Next
	}
}

// activateSearchParameter registers one SearchParameter version and, if
// this replica wins the lease, reindexes its base types.
func (s *Server) activateSearchParameter(ctx context.Context, rec storage.Record) error {
	sp, err := decodeRecord(rec)
	if err != nil {
		return err
	}
	st := spStatus{State: spStateWorking, Version: rec.VersionID}
	if err := s.registry.Add(sp); err != nil {
		st.State, st.Error = spStateFailed, err.Error()
		return s.putSPStatus(ctx, rec.ID, st)
	}
	s.log.InfoContext(ctx, "search parameter registered", "id", rec.ID, "code", sp["code"])
	won, err := s.backend.KV().PutIfAbsent(ctx, fmt.Sprintf("%s%s/%d", spLeaseKey, rec.ID, rec.VersionID), []byte("1"), spLease)
	if err != nil {
		return fmt.Errorf("taking reindex lease for SearchParameter/%s: %w", rec.ID, err)
	}
	if !won {
		return nil
	}
	if err := s.putSPStatus(ctx, rec.ID, st); err != nil {
		return err
	}
	bases, _ := sp["base"].([]any)
	for _, b := range bases {
		typ, _ := b.(string)
		if typ == "Resource" || typ == "DomainResource" {
			st.State, st.Error = spStateFailed, "reindexing every resource type for a Resource-based parameter is not supported; new writes are indexed"
			return s.putSPStatus(ctx, rec.ID, st)
		}
		if err := s.reindexType(ctx, rec.ID, typ, &st); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			st.State, st.Error = spStateFailed, err.Error()
			return s.putSPStatus(ctx, rec.ID, st)
		}
	}
	st.State = spStateActive
	return s.putSPStatus(ctx, rec.ID, st)
}

// reindexType re-extracts the index entries of every current resource of
// typ. Backends that implement storage.Reindexer replace them in place;
// on others the resource is written again as a new version with the same
// content (visible in its history), the only way the interface offers.
func (s *Server) reindexType(ctx context.Context, spID, typ string, st *spStatus) error {
	ri, inPlace := storage.As[storage.Reindexer](s.backend)
	cursor := ""
	for {
		page, err := s.backend.Search(ctx, storage.Query{Types: []string{typ}, Count: reindexBatch, Cursor: cursor})
		if err != nil {
			return fmt.Errorf("reindex %s: listing: %w", typ, err)
		}
		for _, rec := range page.Records {
			res, err := decodeRecord(rec)
			if err != nil {
				return err
			}
			if inPlace {
				entries, err := s.registry.Index(typ, res)
				if err != nil {
					return fmt.Errorf("reindex %s/%s: %w", typ, rec.ID, err)
				}
				err = ri.Reindex(ctx, typ, rec.ID, rec.VersionID, entries)
				if err != nil && !errors.Is(err, storage.ErrVersionConflict) && !errors.Is(err, storage.ErrNotFound) {
					return fmt.Errorf("reindex %s/%s: %w", typ, rec.ID, err)
				}
			} else {
				w, err := s.prepare(typ, rec.ID, res, rec.VersionID, now(), http.MethodPut)
				if err != nil {
					return err
				}
				// A conflict means a newer version was written after the
				// parameter was registered, so it is already indexed.
				if _, err := s.commitOne(ctx, w); err != nil && !errors.Is(err, storage.ErrVersionConflict) {
					return fmt.Errorf("reindex %s/%s: %w", typ, rec.ID, err)
				}
			}
			st.Done++
		}
		if err := s.putSPStatus(ctx, spID, *st); err != nil {
			return err
		}
		if page.Next == "" {
			return nil
		}
		cursor = page.Next
	}
}

func (s *Server) putSPStatus(ctx context.Context, id string, st spStatus) error {
	st.Updated = time.Now().UTC()
	raw, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encoding reindex status: %w", err)
	}
	if err := s.backend.KV().Put(ctx, spStatusKey+id, raw, 0); err != nil {
		return fmt.Errorf("storing reindex status of SearchParameter/%s: %w", id, err)
	}
	return nil
}

// reindexStatus handles GET [base]/SearchParameter/[id]/$reindex-status.
func (s *Server) reindexStatus(c echo.Context) error {
	if c.Param("type") != "SearchParameter" {
		return errNotFound("$reindex-status applies to SearchParameter only")
	}
	id, err := pathID(c, http.StatusNotFound)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if _, err := s.decide(ctx, ActionRead, "SearchParameter"); err != nil {
		return err
	}
	raw, err := s.backend.KV().Get(ctx, spStatusKey+id)
	st := spStatus{State: "pending"}
	switch {
	case errors.Is(err, storage.ErrNotFound):
		if _, found, err := s.current(ctx, "SearchParameter", id); err != nil {
			return err
		} else if !found {
			return errNotFound("SearchParameter/%s is not known", id)
		}
	case err != nil:
		return fmt.Errorf("reading reindex status: %w", err)
	default:
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("decoding reindex status: %w", err)
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
	return writeResource(c, http.StatusOK, map[string]any{"resourceType": "Parameters", "parameter": params})
}
