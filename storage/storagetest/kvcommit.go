package storagetest

import (
	"errors"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// kvCommitCases run on backends that implement storage.KVCommitter.
var kvCommitCases = []testCase{
	{"WithWrites", func(t *testing.T, e *env) {
		kc := e.kvCommitter()
		if _, err := kc.CommitWithKV(e.ctx, []storage.KVPut{{Key: "cp/a", Value: []byte("1")}}, e.write("Patient", "a", 0), e.write("Patient", "b", 0)); err != nil {
			t.Fatal(err)
		}
		// One write and one put take the single-write path of some backends.
		recs, err := kc.CommitWithKV(e.ctx, []storage.KVPut{{Key: "cp/one", Value: []byte("x"), TTL: time.Hour}}, e.write("Patient", "one", 0))
		if err != nil || len(recs) != 1 || recs[0].Seq == 0 {
			t.Fatalf("single write with a put = %+v, %v", recs, err)
		}
		e.wantKV("cp/a", "1")
		e.wantKV("cp/one", "x")
		for _, id := range []string{"a", "b", "one"} {
			if _, err := e.b.Read(e.ctx, "Patient", id); err != nil {
				t.Fatalf("Patient/%s: %v", id, err)
			}
		}
	}},
	{"RefusedStoresNothing", func(t *testing.T, e *env) {
		kc := e.kvCommitter()
		e.put("Patient", "b")
		if err := e.b.KV().Put(e.ctx, "cp/a", []byte("before"), 0); err != nil {
			t.Fatal(err)
		}
		// b exists already: the whole Commit, puts included, is refused.
		_, err := kc.CommitWithKV(e.ctx, []storage.KVPut{{Key: "cp/c", Value: []byte("2")}, {Key: "cp/a", Value: []byte("2")}},
			e.write("Patient", "c", 0), e.write("Patient", "b", 0))
		wantErr(t, err, storage.ErrVersionConflict, "conflicting CommitWithKV")
		_, err = kc.CommitWithKV(e.ctx, []storage.KVPut{{Key: "cp/c", Value: []byte("2")}}, e.write("Patient", "b", 0))
		wantErr(t, err, storage.ErrVersionConflict, "conflicting single CommitWithKV")
		w := e.write("Patient", "d", 0)
		w.Claim = "same"
		e.commit(w)
		w2 := e.write("Patient", "d2", 0)
		w2.Claim = "same"
		_, err = kc.CommitWithKV(e.ctx, []storage.KVPut{{Key: "cp/c", Value: []byte("3")}}, w2)
		wantErr(t, err, storage.ErrDuplicateClaim, "CommitWithKV with a held claim")
		if _, err := e.b.Read(e.ctx, "Patient", "c"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Patient/c of the refused commit: %v", err)
		}
		if _, err := e.b.KV().Get(e.ctx, "cp/c"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("cp/c of a refused commit: %v", err)
		}
		e.wantKV("cp/a", "before")
	}},
	{"PutsAlone", func(t *testing.T, e *env) {
		kc := e.kvCommitter()
		recs, err := kc.CommitWithKV(e.ctx, []storage.KVPut{{Key: "only", Value: []byte("x"), TTL: time.Hour}, {Key: "brief", Value: []byte("y"), TTL: shortTTL}})
		if err != nil || len(recs) != 0 {
			t.Fatalf("puts alone = %v, %v", recs, err)
		}
		e.wantKV("only", "x")
		time.Sleep(2 * shortTTL)
		if _, err := e.b.KV().Get(e.ctx, "brief"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("a put's TTL was not kept: %v", err)
		}
		if recs, err := kc.CommitWithKV(e.ctx, nil); err != nil || len(recs) != 0 {
			t.Fatalf("empty CommitWithKV = %v, %v", recs, err)
		}
	}},
	{"Reopen", func(t *testing.T, e *env) {
		if e.h.Reopen == nil {
			t.Skip("harness has no Reopen")
		}
		if _, err := e.kvCommitter().CommitWithKV(e.ctx, []storage.KVPut{{Key: "cp", Value: []byte("1")}}, e.write("Patient", "a", 0), e.write("Patient", "b", 0)); err != nil {
			t.Fatal(err)
		}
		e.reopen()
		e.wantKV("cp", "1")
		if _, err := e.b.Read(e.ctx, "Patient", "b"); err != nil {
			t.Fatalf("Patient/b after reopen: %v", err)
		}
	}},
}

func (e *env) kvCommitter() storage.KVCommitter {
	e.t.Helper()
	kc, ok := storage.As[storage.KVCommitter](e.b)
	if !ok {
		e.t.Skip("backend does not implement storage.KVCommitter")
	}
	if !e.atomic() {
		e.t.Skip("backend cannot commit several writes atomically")
	}
	return kc
}

func (e *env) wantKV(key, want string) {
	e.t.Helper()
	got, err := e.b.KV().Get(e.ctx, key)
	if err != nil || string(got) != want {
		e.t.Fatalf("KV %s = %q, %v; want %q", key, got, err, want)
	}
}
