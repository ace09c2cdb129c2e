package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

// instanceOf checks the type and id of an instance read; a malformed id
// cannot name a stored resource: 404.
func instanceOf(r ReadRequest) (typ, id string, err error) {
	typ, id = r.Param("type"), r.Param("id")
	if !conformance.IsResourceType(typ) {
		return "", "", errNotFound("unknown resource type %q", typ)
	}
	if !ValidID(id) {
		return "", "", newError(http.StatusNotFound, codeInvalid, "invalid resource id %q: R4 ids are 1-64 of [A-Za-z0-9-.]", id)
	}
	return typ, id, nil
}

// Read is the read interaction.
func (s *Server) Read(ctx context.Context, r ReadRequest) (ReadResult, error) {
	typ, id, err := instanceOf(r)
	if err != nil {
		return ReadResult{}, err
	}
	// Decide before touching storage, so that a caller without access to
	// the type cannot even learn which ids exist.
	d, err := s.decide(ctx, ActionRead, typ)
	if err != nil {
		return ReadResult{}, err
	}
	v, err := s.view(ctx)
	if err != nil {
		return ReadResult{}, err
	}
	stored, err := s.storedID(ctx, v, typ, id)
	if err != nil {
		return ReadResult{}, err
	}
	rec, err := s.backend.Read(ctx, typ, stored)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return ReadResult{}, errNotFound("%s/%s is not known", typ, id)
		}
		return ReadResult{}, err
	}
	return s.RecordResult(ctx, r, d, v, rec)
}

// VRead is the vread interaction.
func (s *Server) VRead(ctx context.Context, r ReadRequest) (ReadResult, error) {
	typ, id, err := instanceOf(r)
	if err != nil {
		return ReadResult{}, err
	}
	vid, err := strconv.ParseInt(r.Param("vid"), 10, 64)
	if err != nil || vid < 1 {
		return ReadResult{}, errNotFound("%s/%s has no version %q", typ, id, r.Param("vid"))
	}
	d, err := s.decide(ctx, ActionRead, typ)
	if err != nil {
		return ReadResult{}, err
	}
	v, err := s.view(ctx)
	if err != nil {
		return ReadResult{}, err
	}
	stored, err := s.storedID(ctx, v, typ, id)
	if err != nil {
		return ReadResult{}, err
	}
	rec, err := s.backend.ReadVersion(ctx, typ, stored, vid)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return ReadResult{}, errNotFound("%s/%s has no version %d", typ, id, vid)
		}
		return ReadResult{}, err
	}
	return s.RecordResult(ctx, r, d, v, rec)
}

// RecordResult is the answer of a read of one stored version the caller
// is allowed to read (d), through its view v, honouring conditional-read
// headers. Under a view the stored lastUpdated is never disclosed nor
// compared: no Last-Modified, and If-Modified-Since is ignored (it would
// be an oracle on the real timeline); the ETag (a version number) stays.
func (s *Server) RecordResult(ctx context.Context, r ReadRequest, d Decision, v View, rec storage.Record) (ReadResult, error) {
	if rec.Deleted {
		// A deleted version has no content of its own: under a filter it is
		// judged by the last version that had content, so a deleted
		// resource outside the grant answers exactly as a live one outside
		// it (403), and 410 never tells a caller that an id it may not see
		// once existed.
		if err := s.deletedWithin(ctx, d, ActionRead, rec); err != nil {
			return ReadResult{}, err
		}
		e := newError(http.StatusGone, codeDeleted, "%s/%s was deleted (version %d)", rec.Type, rec.ID, rec.VersionID)
		if v != nil {
			e = newError(http.StatusGone, codeDeleted, "%s/%s was deleted (version %d)", rec.Type, r.Param("id"), rec.VersionID)
		}
		e.Header = http.Header{"Etag": {ETag(rec.VersionID)}}
		return ReadResult{}, e
	}
	if d.Filter != nil {
		res, err := decodeRecord(rec)
		if err != nil {
			return ReadResult{}, err
		}
		if err := s.within(d, ActionRead, rec.Type, rec.ID, res); err != nil {
			return ReadResult{}, err
		}
	}
	out := ReadResult{Status: http.StatusOK, Rec: &rec, HideModified: v != nil}
	ims := r.IfModifiedSince
	if v != nil {
		ims = ""
	}
	if notModified(r.IfNoneMatch, ims, rec) {
		out.Status = http.StatusNotModified
		return out, nil
	}
	raw, _, err := s.emit(ctx, v, nil, rec)
	if err != nil {
		return ReadResult{}, err
	}
	out.Raw = raw
	return out, nil
}

// deletedWithin authorizes action on deleted version rec by the content of
// the newest earlier version that has some; with no such version there is
// nothing that could place it inside the filter, so it is refused.
func (s *Server) deletedWithin(ctx context.Context, d Decision, action string, rec storage.Record) error {
	if d.Filter == nil {
		return nil
	}
	for v := rec.VersionID - 1; v >= 1; v-- {
		prev, err := s.backend.ReadVersion(ctx, rec.Type, rec.ID, v)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %s/%s version %d for authorization: %w", rec.Type, rec.ID, v, err)
		}
		if prev.Deleted {
			continue
		}
		res, err := decodeRecord(prev)
		if err != nil {
			return err
		}
		return s.within(d, action, rec.Type, rec.ID, res)
	}
	return inside(d, action, rec.Type, rec.ID, nil)
}

// gone answers an action on a deleted resource: 403 exactly as for a live
// resource outside the grant when the caller could not see its last
// content, else 410.
func (s *Server) gone(ctx context.Context, action string, rec storage.Record) error {
	d, err := s.decide(ctx, action, rec.Type)
	if err != nil {
		return err
	}
	if err := s.deletedWithin(ctx, d, action, rec); err != nil {
		return err
	}
	return newError(http.StatusGone, codeDeleted, "%s/%s was deleted (version %d)", rec.Type, rec.ID, rec.VersionID)
}

// notModified applies If-None-Match (preferred when present) and
// If-Modified-Since (second precision, as HTTP dates have).
func notModified(inm, ims string, rec storage.Record) bool {
	if inm != "" {
		for _, tag := range strings.Split(inm, ",") {
			if strings.TrimSpace(tag) == "*" {
				return true
			}
			if v, ok := ParseETag(tag); ok && v == rec.VersionID {
				return true
			}
		}
		return false
	}
	if ims != "" {
		t, err := http.ParseTime(ims)
		if err != nil {
			return false
		}
		return !rec.LastUpdated.Truncate(time.Second).After(t)
	}
	return false
}
