package sqlite

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// TestCommitWithKV: the puts are stored with the writes, and a Commit
// refused by a version conflict stores neither them nor the writes; the
// record survives a reopen.
func TestCommitWithKV(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir)
	ctx := t.Context()
	w := func(id string, expect int64) storage.Write {
		return storage.Write{Record: storage.Record{Type: "Patient", ID: id, VersionID: expect + 1, LastUpdated: time.Now(), Method: "PUT",
			JSON: fmt.Appendf(nil, `{"resourceType":"Patient","id":%q}`, id)}, ExpectVersion: expect}
	}
	if _, err := b.CommitWithKV(ctx, []storage.KVPut{{Key: "cp/a", Value: []byte("1")}}, w("a", 0), w("b", 0)); err != nil {
		t.Fatal(err)
	}
	// b exists already: the whole Commit, cp/c included, is refused.
	_, err := b.CommitWithKV(ctx, []storage.KVPut{{Key: "cp/c", Value: []byte("2")}, {Key: "cp/a", Value: []byte("2")}}, w("c", 0), w("b", 0))
	if !errors.Is(err, storage.ErrVersionConflict) {
		t.Fatalf("conflicting commit: %v", err)
	}
	if _, err := b.Read(ctx, "Patient", "c"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Patient/c of the refused commit: %v", err)
	}
	if _, err := b.KV().Get(ctx, "cp/c"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("cp/c of the refused commit: %v", err)
	}
	if _, err := b.CommitWithKV(ctx, []storage.KVPut{{Key: "only", Value: []byte("x"), TTL: time.Hour}}); err != nil {
		t.Fatalf("puts alone: %v", err)
	}
	b.Close()
	b = openT(t, dir)
	defer b.Close()
	for k, want := range map[string]string{"cp/a": "1", "only": "x"} {
		if v, err := b.KV().Get(ctx, k); err != nil || string(v) != want {
			t.Errorf("%s after reopen: %q %v, want %q", k, v, err, want)
		}
	}
	if _, err := b.Read(ctx, "Patient", "a"); err != nil {
		t.Errorf("Patient/a: %v", err)
	}
}
