package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Helpers shared by the interactions: path checks, the write pipeline
// (validate, set meta, index, commit) and version headers.

// ValidID checks the R4 id rule: [A-Za-z0-9\-\.]{1,64}.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c == '-' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// parseResource validates a body (structure, then profiles and core
// invariants: conform) and checks that it is a resource of typ.
func (s *Server) parseResource(ctx context.Context, typ string, body []byte) (conformance.Parsed, error) {
	parsed, issues := s.validator.Validate(ctx, body)
	if conformance.HasErrors(issues) {
		return parsed, validationError(issues)
	}
	if parsed.Resource == nil {
		return parsed, newError(http.StatusBadRequest, codeStructure, "the body is not a FHIR resource")
	}
	if parsed.Type != typ {
		return parsed, errBadRequest("the body is a %s but the URL names %s", parsed.Type, typ)
	}
	if err := s.conform(ctx, typ, parsed.Resource); err != nil {
		return parsed, err
	}
	return parsed, nil
}

// formatInstant writes lastUpdated as FHIR instant with milliseconds, the
// precision every backend keeps.
func formatInstant(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// now returns the write time truncated to what storage keeps, so that the
// served meta.lastUpdated and Last-Modified never disagree with a re-read.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// prepare stamps id and meta on a validated resource (client versionId and
// lastUpdated are overwritten; profile, tag, security are kept) and builds
// the storage write with the resource's index entries.
func (s *Server) prepare(typ, id string, res map[string]any, expect int64, at time.Time, method string) (storage.Write, error) {
	res["id"] = id
	meta, _ := res["meta"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
	}
	meta["versionId"] = strconv.FormatInt(expect+1, 10)
	meta["lastUpdated"] = formatInstant(at)
	res["meta"] = meta
	raw, err := EncodeResource(res)
	if err != nil {
		return storage.Write{}, fmt.Errorf("encoding %s/%s: %w", typ, id, err)
	}
	entries, err := s.registry.Index(typ, res)
	if err != nil {
		return storage.Write{}, fmt.Errorf("indexing %s/%s: %w", typ, id, err)
	}
	return storage.Write{
		Record: storage.Record{
			Type: typ, ID: id, VersionID: expect + 1, LastUpdated: at, Method: method, JSON: raw,
		},
		ExpectVersion: expect,
		Index:         entries,
	}, nil
}

// commit stores writes in one Commit. When the request is audited by a
// sink that can commit with the data (auth.AuditWrites), the AuditEvent
// of the change goes into the same Commit, so that no crash can separate
// a change from its record. A backend that cannot commit several writes
// atomically gets the data alone and the audit middleware records the
// request afterwards, as for reads. The records returned are the data's.
//
// Observers derive writes from the store as it was before the Commit (a
// patient's alert, with compare-and-set on its version). When a concurrent
// Commit changed a derived resource first, the Commit is refused with
// ErrVersionConflict although the caller's own writes still hold: the
// observers then run again over the new state, up to maxObserveAttempts
// times, instead of answering the caller 409 for a race it did not cause.
// Every path through commit (create, update, patch, delete, conditional
// forms, transaction and batch entries) shares it; so do all observers.
func (s *Server) commit(ctx context.Context, writes []storage.Write) ([]storage.Record, error) {
	for attempt := 1; ; attempt++ {
		recs, derived, err := s.commitAttempt(ctx, writes)
		if err == nil || !derived || !errors.Is(err, storage.ErrVersionConflict) || attempt == maxObserveAttempts {
			return recs, err
		}
		held, cerr := s.stillCurrent(ctx, writes)
		if cerr != nil {
			return nil, errors.Join(err, cerr)
		}
		if !held {
			return nil, err // the caller's own write lost: its 409
		}
		s.log.DebugContext(ctx, "derived write lost a race; observing the commit again", "attempt", attempt, "err", err)
	}
}

// maxObserveAttempts bounds the re-observed Commits of one change. Each
// lost race means another Commit for the same derived resource succeeded,
// so a change is refused only under a sustained burst of writes for one
// patient.
const maxObserveAttempts = 8

// stillCurrent reports whether the compare-and-set of every write still
// holds against the store.
func (s *Server) stillCurrent(ctx context.Context, writes []storage.Write) (bool, error) {
	for _, w := range writes {
		cur, exists, err := s.current(ctx, w.Type, w.ID)
		if err != nil {
			return false, err
		}
		if (exists && cur.VersionID != w.ExpectVersion) || (!exists && w.ExpectVersion != 0) {
			return false, nil
		}
	}
	return true, nil
}

// commitAttempt observes and commits writes once; derived reports whether
// the observers added writes (only those can lose a race worth retrying).
func (s *Server) commitAttempt(ctx context.Context, writes []storage.Write) (_ []storage.Record, derived bool, _ error) {
	primary := len(writes)
	writes, release, err := s.observe(ctx, writes)
	derived = len(writes) > primary
	if err != nil {
		return nil, derived, err
	}
	defer release()
	if !s.atomicCommit(ctx) {
		recs, _, err := s.commitObserved(ctx, writes)
		if err != nil {
			return nil, derived, err
		}
		return recs[:primary], derived, nil
	}
	all, done, err := auth.AuditWrites(ctx, writes)
	if err != nil {
		return nil, derived, err
	}
	recs, _, err := s.commitObserved(ctx, all)
	done(err)
	if err != nil {
		return nil, derived, err
	}
	if len(recs) != len(all) {
		return nil, derived, fmt.Errorf("backend returned %d records for %d writes", len(recs), len(all))
	}
	return recs[:primary], derived, nil
}

// commitOne commits a single write and returns the stored record.
func (s *Server) commitOne(ctx context.Context, w storage.Write) (storage.Record, error) {
	recs, err := s.commit(ctx, []storage.Write{w})
	if err != nil {
		return storage.Record{}, fmt.Errorf("storing %s/%s version %d: %w", w.Type, w.ID, w.VersionID, err)
	}
	if len(recs) != 1 {
		return storage.Record{}, fmt.Errorf("storing %s/%s: backend returned %d records for one write", w.Type, w.ID, len(recs))
	}
	return recs[0], nil
}

// current reads the current version; a never-written resource is
// (zero record, false, nil).
func (s *Server) current(ctx context.Context, typ, id string) (storage.Record, bool, error) {
	rec, err := s.backend.Read(ctx, typ, id)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Record{}, false, nil
	}
	if err != nil {
		return storage.Record{}, false, fmt.Errorf("reading %s/%s: %w", typ, id, err)
	}
	return rec, true, nil
}

// decodeRecord decodes stored JSON for a check that needs the resource
// (authorization filter, patch).
func decodeRecord(rec storage.Record) (map[string]any, error) {
	v, err := DecodeJSON(rec.JSON)
	if err != nil {
		return nil, fmt.Errorf("decoding stored %s/%s version %d: %w", rec.Type, rec.ID, rec.VersionID, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("stored %s/%s version %d is not a JSON object", rec.Type, rec.ID, rec.VersionID)
	}
	return m, nil
}

func ETag(version int64) string { return `W/"` + strconv.FormatInt(version, 10) + `"` }

// ParseETag reads W/"3", "3" or 3 as version 3.
func ParseETag(v string) (int64, bool) {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "W/")
	v = strings.Trim(v, `"`)
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0
}

func preconditionFailed(want int64, cur storage.Record, exists bool) *Error {
	e := newError(http.StatusPreconditionFailed, codeConflict, "If-Match requires version %d", want)
	if exists {
		e.Issues[0].Diagnostics += fmt.Sprintf(", the current version is %d", cur.VersionID)
		e.Header = http.Header{"Etag": {ETag(cur.VersionID)}}
	} else {
		e.Issues[0].Diagnostics += ", and the resource does not exist"
	}
	return e
}

func (s *Server) resourceURL(typ, id string) string { return s.base + "/" + typ + "/" + id }

// VersionURL is the absolute URL of one version of a resource ([base]/Type/id/_history/vid).
func (s *Server) VersionURL(rec storage.Record) string {
	return s.resourceURL(rec.Type, rec.ID) + "/_history/" + strconv.FormatInt(rec.VersionID, 10)
}

// recordReadable reports whether the caller may read a version it has
// just written. A failure to decide counts as no (the write is done; only
// its echo is withheld) and is logged.
func (s *Server) recordReadable(ctx context.Context, rec storage.Record) bool {
	if s.authz == nil {
		return true
	}
	res, err := decodeRecord(rec)
	if err == nil {
		var ok bool
		if ok, err = s.readable(ctx, rec.Type, rec.ID, res); err == nil {
			return ok
		}
	}
	s.log.WarnContext(ctx, "write answered without its resource: read access undecided", "type", rec.Type, "id", rec.ID, "err", err)
	return false
}
