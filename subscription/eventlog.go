package subscription

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/storage"
)

// The event log of a topic-based Subscription: each numbered event is
// kept under eventLogPrefix + id + "/" + its number (12 digits) for
// eventNumberKeepFor, so that $events can replay a range of numbers.
const eventLogPrefix = "subscription/event-log/"

func eventLogKey(subID string, n int64) string {
	return fmt.Sprintf("%s%s/%012d", eventLogPrefix, subID, n)
}

// logEntry is the stored form of one logged event. Its encoding is
// pinned by TestLogEntryEncoding.
type logEntry struct {
	V       int       `json:"v"` // always 1
	Type    string    `json:"type"`
	ID      string    `json:"id"`
	Version int64     `json:"version"`
	At      time.Time `json:"at"`
}

func encodeLogEntry(le logEntry) []byte {
	le.V = 1
	le.At = le.At.UTC()
	b, _ := json.Marshal(le) // cannot fail: strings, ints and a time
	return b
}

func decodeLogEntry(b []byte) (logEntry, error) {
	var le logEntry
	if err := json.Unmarshal(b, &le); err != nil {
		return le, fmt.Errorf("decoding subscription event log entry: %w", err)
	}
	if le.V != 1 || le.Type == "" || le.ID == "" || le.Version < 1 {
		return le, fmt.Errorf("subscription event log entry of unknown form %q", b)
	}
	return le, nil
}

// focusOf is one version as the Subscription's owner may receive it: the
// id it knows the resource by and, for full-resource content, the
// resource (through the server's output filter, like every read).
func (s *Service) focusOf(ctx context.Context, sb *sub, typ, id string, version int64, content string) (numbered, error) {
	srv, err := s.server()
	if err != nil {
		return numbered{}, err
	}
	rec, err := s.cfg.Backend.ReadVersion(ctx, typ, id, version)
	if err != nil {
		return numbered{}, fmt.Errorf("reading %s/%s version %d: %w", typ, id, version, err)
	}
	out := numbered{at: rec.LastUpdated, typ: typ, id: id, version: version}
	if content == contentEmpty {
		return out, nil
	}
	octx := ctx
	if sb.Owner != nil {
		octx = auth.WithPrincipal(ctx, sb.Owner.principal())
	}
	// Even id-only passes the output filter: the id is the one the owner
	// knows the resource by.
	raw, vid, err := srv.Emit(octx, rec)
	if err != nil {
		return numbered{}, fmt.Errorf("filtering %s/%s for the subscriber: %w", typ, id, err)
	}
	out.id = vid
	if content == contentFull {
		out.json = raw
	}
	return out, nil
}

// maxReplay bounds the events one $events answer carries.
const maxReplay = 100

// replay returns the logged events numbered since..until (inclusive) that
// are still kept, each with its focus, at most maxReplay of them.
func (s *Service) replay(ctx context.Context, sb *sub, since, until int64, content string) ([]numbered, error) {
	kv := s.cfg.Backend.KV()
	var out []numbered
	for n := since; n <= until && len(out) < maxReplay; n++ {
		b, err := kv.Get(ctx, eventLogKey(sb.ID, n))
		if errors.Is(err, storage.ErrNotFound) {
			continue // expired, or a number a crash skipped
		}
		if err != nil {
			return nil, fmt.Errorf("reading event %d of Subscription/%s: %w", n, sb.ID, err)
		}
		le, err := decodeLogEntry(b)
		if err != nil {
			return nil, err
		}
		f, err := s.focusOf(ctx, sb, le.Type, le.ID, le.Version, content)
		if errors.Is(err, storage.ErrNotFound) {
			continue // the version is gone (a purged history)
		}
		if err != nil {
			return nil, err
		}
		f.n, f.at = n, le.At
		out = append(out, f)
	}
	return out, nil
}
