package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

var commitCases = []testCase{
	{"CreateAndRead", func(t *testing.T, e *env) {
		w := e.write("Patient", "p1", 0)
		// Odd whitespace, key order and escapes: the bytes must come back unchanged.
		w.JSON = []byte("{ \"z\":1,  \"resourceType\" : \"Patient\", \"name\":\"J\\u00e9r\u00f4me\"\n}")
		rec := e.commit(w)[0]
		if rec.Seq <= 0 {
			t.Fatalf("Seq = %d, want > 0", rec.Seq)
		}
		got, err := e.b.Read(e.ctx, "Patient", "p1")
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if !bytes.Equal(got.JSON, w.JSON) {
			t.Fatalf("JSON changed:\n got  %q\n want %q", got.JSON, w.JSON)
		}
		if got.Type != "Patient" || got.ID != "p1" || got.VersionID != 1 || got.Deleted || got.Method != "POST" {
			t.Fatalf("Read = %+v", got)
		}
		if got.Seq != rec.Seq {
			t.Fatalf("Read Seq %d, Commit Seq %d", got.Seq, rec.Seq)
		}
		if !got.LastUpdated.Equal(w.LastUpdated) {
			t.Fatalf("LastUpdated %v, want %v", got.LastUpdated, w.LastUpdated)
		}
	}},
	{"LastUpdatedMillisecondPrecision", func(t *testing.T, e *env) {
		loc := time.FixedZone("X", 5*3600+1800)
		want := time.Date(2023, 12, 31, 23, 59, 59, 987_000_000, loc)
		w := e.write("Patient", "p1", 0)
		w.LastUpdated = want
		e.commit(w)
		for _, read := range []func() (storage.Record, error){
			func() (storage.Record, error) { return e.b.Read(e.ctx, "Patient", "p1") },
			func() (storage.Record, error) { return e.b.ReadVersion(e.ctx, "Patient", "p1", 1) },
		} {
			got, err := read()
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !got.LastUpdated.Equal(want) {
				t.Fatalf("LastUpdated %v, want %v", got.LastUpdated, want)
			}
		}
		h := e.history(storage.HistoryRequest{Type: "Patient", ID: "p1"})
		if len(h) != 1 || !h[0].LastUpdated.Equal(want) {
			t.Fatalf("history LastUpdated = %v, want %v", h, want)
		}
	}},
	{"ReadNotFound", func(t *testing.T, e *env) {
		_, err := e.b.Read(e.ctx, "Patient", "nope")
		wantErr(t, err, storage.ErrNotFound, "Read of unknown id")
		e.put("Patient", "p1")
		_, err = e.b.Read(e.ctx, "Observation", "p1")
		wantErr(t, err, storage.ErrNotFound, "Read of same id, other type")
		_, err = e.b.ReadVersion(e.ctx, "Patient", "p1", 2)
		wantErr(t, err, storage.ErrNotFound, "ReadVersion of a future version")
		_, err = e.b.ReadVersion(e.ctx, "Patient", "p1", 0)
		wantErr(t, err, storage.ErrNotFound, "ReadVersion 0")
	}},
	{"DuplicateCreateConflicts", func(t *testing.T, e *env) {
		first := e.commit(e.write("Patient", "p1", 0))[0]
		w := e.write("Patient", "p1", 0)
		w.JSON = []byte(`{"second":true}`)
		_, err := e.b.Commit(e.ctx, w)
		wantErr(t, err, storage.ErrVersionConflict, "second create")
		got, err := e.b.Read(e.ctx, "Patient", "p1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Seq != first.Seq || bytes.Contains(got.JSON, []byte("second")) {
			t.Fatalf("failed create changed the resource: %+v", got)
		}
	}},
	{"UpdateCompareAndSet", func(t *testing.T, e *env) {
		e.put("Patient", "p1")
		e.commit(e.write("Patient", "p1", 1))
		_, err := e.b.Commit(e.ctx, e.write("Patient", "p1", 1))
		wantErr(t, err, storage.ErrVersionConflict, "update with stale version")
		_, err = e.b.Commit(e.ctx, e.write("Patient", "p1", 5))
		wantErr(t, err, storage.ErrVersionConflict, "update with future version")
		_, err = e.b.Commit(e.ctx, e.write("Patient", "nope", 1))
		wantErr(t, err, storage.ErrVersionConflict, "update of a resource that does not exist")
		if v := e.current("Patient", "p1"); v != 2 {
			t.Fatalf("current version %d, want 2", v)
		}
	}},
	{"DeleteAndVersions", func(t *testing.T, e *env) {
		var written []storage.Write
		w1 := e.write("Patient", "p1", 0)
		w2 := e.write("Patient", "p1", 1)
		w3 := e.deletion("Patient", "p1", 2)
		w4 := e.write("Patient", "p1", 3) // re-creation after delete continues the versions
		for _, w := range []storage.Write{w1, w2, w3, w4} {
			e.commit(w)
			written = append(written, w)
			if w.Deleted {
				got, err := e.b.Read(e.ctx, "Patient", "p1")
				if err != nil {
					t.Fatalf("Read of deleted: %v", err)
				}
				if !got.Deleted || len(got.JSON) != 0 || got.VersionID != 3 || got.Method != "DELETE" {
					t.Fatalf("Read of deleted = %+v", got)
				}
			}
		}
		for _, w := range written {
			got, err := e.b.ReadVersion(e.ctx, "Patient", "p1", w.VersionID)
			if err != nil {
				t.Fatalf("ReadVersion %d: %v", w.VersionID, err)
			}
			if got.VersionID != w.VersionID || got.Deleted != w.Deleted || !bytes.Equal(got.JSON, w.JSON) ||
				got.Method != w.Method || !got.LastUpdated.Equal(w.LastUpdated) {
				t.Fatalf("ReadVersion %d = %+v, want %+v", w.VersionID, got, w.Record)
			}
		}
	}},
	{"CreateAfterDeleteNeedsVersion", func(t *testing.T, e *env) {
		e.put("Patient", "p1")
		e.del("Patient", "p1")
		_, err := e.b.Commit(e.ctx, e.write("Patient", "p1", 0))
		wantErr(t, err, storage.ErrVersionConflict, "create over a deleted resource with ExpectVersion 0")
	}},
	{"SeqStrictlyIncreasing", func(t *testing.T, e *env) {
		var last int64
		check := func(recs ...storage.Record) {
			for _, r := range recs {
				if r.Seq <= last {
					t.Fatalf("Seq %d after %d", r.Seq, last)
				}
				last = r.Seq
			}
		}
		for i := range 5 {
			check(e.put("Patient", fmt.Sprintf("p%d", i)))
		}
		check(e.del("Patient", "p0"))
		if e.atomic() {
			check(e.commit(e.write("Patient", "a", 0), e.write("Patient", "b", 0), e.write("Observation", "a", 0))...)
		}
		check(e.put("Patient", "p1"))
	}},
	{"MultiWriteAtomic", func(t *testing.T, e *env) {
		e.put("Patient", "p1")
		e.put("Patient", "p1") // now at version 2
		ws := []storage.Write{
			e.write("Patient", "new", 0, tok("code", "s", "atomic", "")),
			e.write("Patient", "p1", 1), // stale
		}
		_, err := e.b.Commit(e.ctx, ws...)
		if !e.atomic() {
			wantErr(t, err, storage.ErrUnsupported, "multi-write on a non-atomic backend")
			t.Logf("backend is not atomic: multi-write Commit answered %v", err)
		} else {
			wantErr(t, err, storage.ErrVersionConflict, "multi-write with one stale version")
		}
		_, err = e.b.Read(e.ctx, "Patient", "new")
		wantErr(t, err, storage.ErrNotFound, "first write of a failed commit")
		p := e.search(storage.Query{Filter: match("code", storage.KindToken, nil), Count: 10})
		wantList(t, refs(p.Records), nil, "index entries of a failed commit")
		if v := e.current("Patient", "p1"); v != 2 {
			t.Fatalf("p1 at version %d, want 2", v)
		}
		if !e.atomic() {
			return
		}
		recs := e.commit(e.write("Patient", "new", 0), e.write("Patient", "p1", 2), e.deletion("Patient", "p1", 3))
		if recs[0].Seq >= recs[1].Seq || recs[1].Seq >= recs[2].Seq {
			t.Fatalf("Seq not in write order: %d %d %d", recs[0].Seq, recs[1].Seq, recs[2].Seq)
		}
		got, err := e.b.Read(e.ctx, "Patient", "p1")
		if err != nil || !got.Deleted || got.VersionID != 4 {
			t.Fatalf("after update+delete in one commit: %+v, %v", got, err)
		}
	}},
	{"ConcurrentUpdateOneWins", func(t *testing.T, e *env) {
		e.put("Patient", "p1")
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		ws := make([]storage.Write, n)
		for i := range ws {
			ws[i] = e.write("Patient", "p1", 1)
		}
		for i := range n {
			wg.Go(func() { _, errs[i] = e.b.Commit(e.ctx, ws[i]) })
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case errors.Is(err, storage.ErrVersionConflict):
			default:
				t.Fatalf("racing update: %v", err)
			}
		}
		if won != 1 {
			t.Fatalf("%d racing updates won, want exactly 1", won)
		}
		h := e.history(storage.HistoryRequest{Type: "Patient", ID: "p1"})
		wantList(t, versions(h), []string{"Patient/p1/2", "Patient/p1/1"}, "history after race")
	}},
	{"BadWrites", func(t *testing.T, e *env) {
		bad := []storage.Write{
			{Record: storage.Record{ID: "x", VersionID: 1, JSON: []byte(`{}`), LastUpdated: e.tick()}},
			{Record: storage.Record{Type: "Patient", VersionID: 1, JSON: []byte(`{}`), LastUpdated: e.tick()}},
		}
		for _, w := range bad {
			if _, err := e.b.Commit(e.ctx, w); err == nil {
				t.Errorf("Commit(%+v) succeeded, want an error", w.Record)
			}
		}
		recs, err := e.b.Commit(e.ctx)
		if err != nil || len(recs) != 0 {
			t.Fatalf("empty Commit = %v, %v; want nothing and no error", recs, err)
		}
	}},
}

var claimCases = []testCase{
	{"Duplicate", func(t *testing.T, e *env) {
		w := e.write("Patient", "p1", 0)
		w.Claim = "k1"
		e.commit(w)
		w2 := e.write("Patient", "p2", 0)
		w2.Claim = "k1"
		_, err := e.b.Commit(e.ctx, w2)
		wantErr(t, err, storage.ErrDuplicateClaim, "second claim")
		_, err = e.b.Read(e.ctx, "Patient", "p2")
		wantErr(t, err, storage.ErrNotFound, "resource of the refused claim")
		// Claims are store-wide, not per type.
		w3 := e.write("Observation", "o1", 0)
		w3.Claim = "k1"
		_, err = e.b.Commit(e.ctx, w3)
		wantErr(t, err, storage.ErrDuplicateClaim, "same claim on another type")
		// A different claim is fine.
		w4 := e.write("Patient", "p2", 0)
		w4.Claim = "k2"
		e.commit(w4)
	}},
	{"HolderMayUpdate", func(t *testing.T, e *env) {
		w := e.write("Patient", "p1", 0)
		w.Claim = "k1"
		e.commit(w)
		u := e.write("Patient", "p1", 1)
		u.Claim = "k1"
		e.commit(u)
		w2 := e.write("Patient", "p2", 0)
		w2.Claim = "k1"
		_, err := e.b.Commit(e.ctx, w2)
		wantErr(t, err, storage.ErrDuplicateClaim, "claim after the holder's update")
	}},
	{"ReleasedByDelete", func(t *testing.T, e *env) {
		w := e.write("Patient", "p1", 0)
		w.Claim = "k1"
		e.commit(w)
		e.del("Patient", "p1")
		w2 := e.write("Patient", "p2", 0)
		w2.Claim = "k1"
		e.commit(w2)
	}},
	{"Race", func(t *testing.T, e *env) {
		const n = 8
		ws := make([]storage.Write, n)
		for i := range ws {
			ws[i] = e.write("Patient", fmt.Sprintf("p%d", i), 0)
			ws[i].Claim = "race"
		}
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { _, errs[i] = e.b.Commit(e.ctx, ws[i]) })
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case errors.Is(err, storage.ErrDuplicateClaim):
			default:
				t.Fatalf("racing claim: %v", err)
			}
		}
		if won != 1 {
			t.Fatalf("%d racing claims won, want exactly 1", won)
		}
		h := e.history(storage.HistoryRequest{Type: "Patient"})
		if len(h) != 1 {
			t.Fatalf("%d resources stored after the race, want 1: %v", len(h), versions(h))
		}
	}},
	{"FailedCommitReleasesNothing", func(t *testing.T, e *env) {
		if !e.atomic() {
			t.Skip("backend is not atomic")
		}
		e.put("Patient", "p1")
		w := e.write("Patient", "p2", 0)
		w.Claim = "k1"
		_, err := e.b.Commit(e.ctx, w, e.write("Patient", "p1", 0)) // second write conflicts
		wantErr(t, err, storage.ErrVersionConflict, "commit with claim and conflict")
		w3 := e.write("Patient", "p3", 0)
		w3.Claim = "k1"
		e.commit(w3) // the claim of the failed commit was never taken
	}},
}
