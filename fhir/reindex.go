package fhir

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Reindexing of one SearchParameter version under its lease.
//
// Progress is the status record (spStatus: base type, page cursor, last
// resource id done on that page), checkpointed every
// reindexCheckpointEvery resources or a third of the lease, whichever
// comes first, so that no lease is ever shorter than the work between two
// checkpoints, however large a page is or however slow the store. Every
// checkpoint is a compare-and-swap of the record this holder last read or
// wrote: a holder whose lease was taken over stops at its next checkpoint
// instead of moving the record back. The work on one resource runs to its
// end even when the lease is lost meanwhile (lost is seen between two
// resources), and a holder that stops for a lost lease checkpoints where
// it stopped: only a killed holder leaves work to redo (at most one
// checkpoint's worth), and no checkpoint claims a resource not done.

// errSPSuperseded stops a holder whose status record was changed by
// another replica since its last checkpoint.
var errSPSuperseded = errors.New("reindex status changed by another replica")

// spProgress is the status record of one reindexing as its holder last
// read or wrote it, and the conditional writer of its checkpoints.
type spProgress struct {
	s     *Server
	id    string
	raw   []byte // nil: no record
	st    spStatus
	since int       // resources done since the last checkpoint
	at    time.Time // when the last checkpoint was written
}

// save writes st as the status record when the record still holds what p
// last read or wrote.
func (p *spProgress) save(ctx context.Context) error {
	p.st.Updated = time.Now().UTC()
	raw, err := json.Marshal(p.st)
	if err != nil {
		return fmt.Errorf("encoding reindex status: %w", err)
	}
	kv, key := p.s.backend.KV(), spStatusKey+p.id
	var ok bool
	if p.raw == nil {
		ok, err = kv.PutIfAbsent(ctx, key, raw, 0)
	} else {
		ok, err = kv.CompareAndSwap(ctx, key, p.raw, raw, 0)
	}
	if err != nil {
		return fmt.Errorf("storing reindex status of SearchParameter/%s: %w", p.id, err)
	}
	if !ok {
		return fmt.Errorf("SearchParameter/%s: %w", p.id, errSPSuperseded)
	}
	p.raw, p.since, p.at = raw, 0, time.Now()
	return nil
}

// done counts one resource done and checkpoints when due.
func (p *spProgress) done(ctx context.Context, id string) error {
	p.st.Done++
	p.st.After = id
	p.since++
	if p.since >= reindexCheckpointEvery || time.Since(p.at) >= p.s.leaseTTL/3 {
		return p.save(ctx)
	}
	return nil
}

// reindexHeld runs the reindexing under its lease (lctx ends when the
// lease is lost), from the checkpoint of the status record when it is
// this version's.
func (s *Server) reindexHeld(lctx context.Context, rec storage.Record, sp map[string]any) (bool, error) {
	p := &spProgress{s: s, id: rec.ID, at: time.Now()}
	var err error
	if p.st, p.raw, err = s.readSPStatus(lctx, rec.ID); err != nil {
		return false, err
	}
	switch {
	case p.st.Version == rec.VersionID && p.st.final():
		return true, nil // finished by the replica that held the lease before
	case p.st.Version == rec.VersionID && p.st.State == spStateWorking:
		s.log.InfoContext(lctx, "search parameter reindex resumed", "id", rec.ID, "base", p.st.Base, "done", p.st.Done)
	default:
		p.st = spStatus{State: spStateWorking, Version: rec.VersionID}
		if err := p.save(lctx); err != nil {
			return false, err
		}
	}
	// The work itself is not cancelled by a lost lease, only stopped
	// between two resources; the checkpoint of a stop is written after.
	ctx := context.WithoutCancel(lctx)
	final, err := s.reindexBases(ctx, lctx, p, sp)
	if lctx.Err() != nil && !final && !errors.Is(err, errSPSuperseded) {
		if serr := p.save(ctx); serr != nil && !errors.Is(serr, errSPSuperseded) {
			return false, errors.Join(lctx.Err(), serr)
		}
		return false, lctx.Err()
	}
	if errors.Is(err, errSPSuperseded) {
		s.log.InfoContext(ctx, "search parameter reindex: status moved on elsewhere; leaving it", "id", rec.ID)
		return false, nil
	}
	return final, err
}

// reindexBases reindexes the base types from p's checkpoint on; it stops
// (false, nil) when stop ends.
func (s *Server) reindexBases(ctx, stop context.Context, p *spProgress, sp map[string]any) (bool, error) {
	bases, _ := sp["base"].([]any)
	for p.st.Base < len(bases) {
		typ, _ := bases[p.st.Base].(string)
		if typ == "Resource" || typ == "DomainResource" {
			p.st.State, p.st.Error = spStateFailed, "reindexing every resource type for a Resource-based parameter is not supported; new writes are indexed"
			return true, p.save(ctx)
		}
		finished, err := s.reindexType(ctx, stop, typ, p)
		if err != nil {
			if errors.Is(err, errSPSuperseded) {
				return false, err
			}
			p.st.State, p.st.Error = spStateFailed, err.Error()
			return true, p.save(ctx)
		}
		if !finished {
			return false, nil
		}
		p.st.Base, p.st.Cursor, p.st.After = p.st.Base+1, "", ""
		if p.st.Base < len(bases) {
			if err := p.save(ctx); err != nil {
				return false, err
			}
		}
	}
	p.st.State, p.st.Cursor, p.st.After = spStateActive, "", ""
	return true, p.save(ctx)
}

// reindexType re-extracts the index entries of every current resource of
// typ from p's checkpoint on. Backends that implement storage.Reindexer
// replace them in place; on others the resource is written again as a new
// version with the same content (visible in its history), the only way
// the interface offers. It reports false when stop ended first.
func (s *Server) reindexType(ctx, stop context.Context, typ string, p *spProgress) (bool, error) {
	ri, inPlace := storage.As[storage.Reindexer](s.backend)
	for {
		page, err := s.backend.Search(ctx, storage.Query{Types: []string{typ}, Count: reindexBatch, Cursor: p.st.Cursor})
		if errors.Is(err, storage.ErrBadCursor) && p.st.Cursor != "" {
			// A checkpoint the backend no longer accepts (written by
			// another version): redo the type, which is harmless.
			p.st.Cursor, p.st.After = "", ""
			continue
		}
		if err != nil {
			return false, fmt.Errorf("reindex %s: listing: %w", typ, err)
		}
		recs := page.Records
		if p.st.After != "" {
			// Resources are listed in id order within a type: skip those
			// done. When the last one done is gone (deleted since), redo
			// the page.
			if i := slices.IndexFunc(recs, func(r storage.Record) bool { return r.ID == p.st.After }); i >= 0 {
				recs = recs[i+1:]
			}
		}
		for _, rec := range recs {
			if stop.Err() != nil {
				return false, nil
			}
			if err := s.reindexOne(ctx, ri, inPlace, typ, rec); err != nil {
				return false, err
			}
			if err := p.done(ctx, rec.ID); err != nil {
				return false, err
			}
		}
		if page.Next == "" {
			return true, nil
		}
		p.st.Cursor, p.st.After = page.Next, ""
		if err := p.save(ctx); err != nil {
			return false, err
		}
	}
}

// reindexOne recomputes the index entries of one stored version.
func (s *Server) reindexOne(ctx context.Context, ri storage.Reindexer, inPlace bool, typ string, rec storage.Record) error {
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
		return nil
	}
	w, err := s.prepare(typ, rec.ID, res, rec.VersionID, now(), http.MethodPut)
	if err != nil {
		return err
	}
	// A conflict means a newer version was written after the parameter
	// was registered, so it is already indexed.
	if _, err := s.commitOne(ctx, w); err != nil && !errors.Is(err, storage.ErrVersionConflict) {
		return fmt.Errorf("reindex %s/%s: %w", typ, rec.ID, err)
	}
	return nil
}

// spStatus reads the status record of a SearchParameter (zero when none).
func (s *Server) spStatus(ctx context.Context, id string) (spStatus, error) {
	st, _, err := s.readSPStatus(ctx, id)
	return st, err
}

// readSPStatus is spStatus with the record's bytes (nil when none).
func (s *Server) readSPStatus(ctx context.Context, id string) (spStatus, []byte, error) {
	var st spStatus
	raw, err := s.backend.KV().Get(ctx, spStatusKey+id)
	if errors.Is(err, storage.ErrNotFound) {
		return st, nil, nil
	}
	if err != nil {
		return st, nil, fmt.Errorf("reading reindex status of SearchParameter/%s: %w", id, err)
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, nil, fmt.Errorf("decoding reindex status of SearchParameter/%s: %w", id, err)
	}
	return st, bytes.Clone(raw), nil
}

// putSPStatus stores st unconditionally (a version whose parameter could
// not be registered: no lease, no reindexing).
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
