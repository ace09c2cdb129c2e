// Package audit stores the auth package's AuditEvents as FHIR R4
// AuditEvent resources in the same backend, with the same durability and
// index, as the clinical data, so that administrators find them with an
// ordinary AuditEvent search. Reading them is governed by the decision
// point like any other type (auth.Policy opens AuditEvent only to scopes
// that name it explicitly).
//
// It must not know about HTTP or tokens: it receives finished
// auth.AuditEvent values.
package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Indexer extracts search index entries (*resources.Registry satisfies it).
type Indexer interface {
	Index(resourceType string, res map[string]any) ([]storage.Entry, error)
}

// Store writes audit events to a backend.
type Store struct {
	backend storage.Backend
	index   Indexer
}

// New returns an AuditSink writing to backend.
func New(backend storage.Backend, index Indexer) *Store {
	return &Store{backend: backend, index: index}
}

var _ auth.AuditPreparer = (*Store)(nil)

// PrepareAudit returns the write of ev's AuditEvent without storing it,
// for a caller that commits it together with the data it records.
func (s *Store) PrepareAudit(ev auth.AuditEvent) (storage.Write, error) {
	return prepare(s.index, ev)
}

// RecordAudit stores ev as a new AuditEvent resource, in a Commit of its
// own. GroupCommit does the same for many concurrent requests at once.
func (s *Store) RecordAudit(ctx context.Context, ev auth.AuditEvent) error {
	w, err := prepare(s.index, ev)
	if err != nil {
		return err
	}
	if _, err := s.backend.Commit(ctx, w); err != nil {
		return fmt.Errorf("audit: store AuditEvent/%s: %w", w.ID, err)
	}
	return nil
}

// prepare turns ev into the storage write of a new AuditEvent resource.
func prepare(index Indexer, ev auth.AuditEvent) (storage.Write, error) {
	res := ev.Resource()
	id := newID()
	at := time.Now().UTC().Truncate(time.Millisecond)
	res["id"] = id
	res["meta"] = map[string]any{"versionId": "1", "lastUpdated": at.Format("2006-01-02T15:04:05.000Z07:00")}
	body, err := json.Marshal(res)
	if err != nil {
		return storage.Write{}, fmt.Errorf("audit: encode: %w", err)
	}
	return writeOf(index, id, at, body)
}

// writeOf is the write of an encoded AuditEvent resource.
func writeOf(index Indexer, id string, at time.Time, body []byte) (storage.Write, error) {
	// Index the JSON as the FHIR layer would see it (numbers as json.Number).
	var decoded map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&decoded); err != nil {
		return storage.Write{}, fmt.Errorf("audit: decode: %w", err)
	}
	entries, err := index.Index("AuditEvent", decoded)
	if err != nil {
		return storage.Write{}, fmt.Errorf("audit: index: %w", err)
	}
	return storage.Write{
		Record: storage.Record{Type: "AuditEvent", ID: id, VersionID: 1, LastUpdated: at, Method: http.MethodPost, JSON: body},
		Index:  entries,
	}, nil
}

// newID is an AuditEvent id: 32 hex digits, the first 12 the creation
// time in Unix milliseconds and the rest random. Ids in time order make
// every index keyed by id (the resource and version rows, _id) grow at
// its end instead of at a random page, which on a large store is most of
// what storing an event costs; they also list in the order recorded.
func newID() string {
	return timeOrderedID(time.Now())
}

func timeOrderedID(t time.Time) string {
	b := make([]byte, 16)
	ms := uint64(t.UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	_, _ = rand.Read(b[6:])
	return hex.EncodeToString(b)
}
