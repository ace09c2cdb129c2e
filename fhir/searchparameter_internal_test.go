package fhir

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/lease"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// TestReindexTakeover: a replica took the reindex lease of a
// SearchParameter over two base types, checkpointed the first type as
// done and died. The next replica leaves the reindex alone while the dead
// one's lease lasts, then resumes at the checkpoint: the second type
// becomes searchable, the first is not redone (the checkpoint was a lie
// this test told, so its resources stay unindexed), and it runs once.
func TestReindexTakeover(t *testing.T) {
	ctx := t.Context()
	be, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	s, err := New(Config{BaseURL: "http://anodyne.test", Backend: be, LeaseTTL: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const ext = `"extension":[{"url":"http://example.org/fhir/StructureDefinition/pain-body-site","valueCodeableConcept":{"coding":[{"system":"http://snomed.info/sct","code":"77568009"}]}}]`
	put := func(body string) storage.Record {
		t.Helper()
		parsed, issues := s.validator.Validate(ctx, []byte(body))
		if conformance.HasErrors(issues) {
			t.Fatalf("%s: %v", body, issues)
		}
		w, err := s.prepare(parsed.Type, parsed.ID, parsed.Resource, 0, now(), http.MethodPut)
		if err != nil {
			t.Fatal(err)
		}
		recs, err := s.commitOne(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	put(`{"resourceType":"Patient","id":"pa",` + ext + `}`)
	put(`{"resourceType":"Practitioner","id":"pr1",` + ext + `}`)
	put(`{"resourceType":"Practitioner","id":"pr2",` + ext + `}`)
	sp := put(`{"resourceType":"SearchParameter","id":"site","url":"http://example.org/fhir/SearchParameter/site","name":"Site","status":"active","description":"Pain site",
		"code":"site","base":["Patient","Practitioner"],"type":"token",
		"expression":"Patient.extension.where(url='http://example.org/fhir/StructureDefinition/pain-body-site').value | Practitioner.extension.where(url='http://example.org/fhir/StructureDefinition/pain-body-site').value"}`)

	// The dead replica's traces: its lease and its checkpoint.
	const deadTTL = 1200 * time.Millisecond
	key := spLeaseKey + "site/1"
	if ok, err := lease.Acquire(ctx, be.KV(), key, "dead-replica", deadTTL); err != nil || !ok {
		t.Fatalf("Acquire: %v %v", ok, err)
	}
	leased := time.Now()
	if err := s.putSPStatus(ctx, "site", spStatus{State: spStateWorking, Version: sp.VersionID, Base: 1, Done: 1}); err != nil {
		t.Fatal(err)
	}

	loopCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.RunSearchParameters(loopCtx, 50*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	var st spStatus
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		raw, err := be.KV().Get(ctx, spStatusKey+"site")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatal(err)
		}
		if st.final() {
			break
		}
		if time.Since(leased) < deadTTL-200*time.Millisecond && st.Done != 1 {
			t.Fatalf("reindex moved (%+v) while the dead replica's lease lasted", st)
		}
	}
	if time.Since(leased) < deadTTL {
		t.Fatalf("reindex finished before the dead replica's lease expired")
	}
	if st.State != spStateActive || st.Done != 3 || st.Base != 2 {
		t.Fatalf("status %+v; want active with 1 (checkpoint) + 2 practitioners done", st)
	}
	search := func(typ string) []string {
		t.Helper()
		filter := storage.Match{Param: "site", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "77568009"}}
		page, err := be.Search(ctx, storage.Query{Types: []string{typ}, Filter: filter, Count: 10})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range page.Records {
			ids = append(ids, r.ID)
		}
		return ids
	}
	if got := search("Practitioner"); len(got) != 2 {
		t.Errorf("practitioners found by the new parameter: %v, want both", got)
	}
	if got := search("Patient"); len(got) != 0 {
		t.Errorf("patients found: %v; the type before the checkpoint was redone", got)
	}
	var herr error
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if _, herr = lease.Holder(ctx, be.KV(), key); errors.Is(herr, storage.ErrNotFound) {
			break
		}
	}
	if !errors.Is(herr, storage.ErrNotFound) {
		t.Errorf("the reindex lease is still held after it finished: %v", herr)
	}
}
