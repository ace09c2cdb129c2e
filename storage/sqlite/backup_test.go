package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

func put(t *testing.T, b storage.Backend, id string, version int64) error {
	t.Helper()
	_, err := b.Commit(context.Background(), storage.Write{
		Record:        storage.Record{Type: "Patient", ID: id, VersionID: version, LastUpdated: time.Now().UTC().Truncate(time.Millisecond), Method: "PUT", JSON: []byte(fmt.Sprintf(`{"resourceType":"Patient","id":%q}`, id))},
		ExpectVersion: version - 1,
		Index:         []storage.Entry{{Param: "_id", Kind: storage.KindToken, Code: id}},
	})
	return err
}

// TestBackupRestore backs up while a writer keeps committing, restores
// into a new directory, and checks that the copy holds a prefix of the
// writer's acknowledged commits (a snapshot: nothing torn, nothing from
// after) and is searchable; and that neither end overwrites a database.
func TestBackupRestore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := sqlite.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := 0; i < 50; i++ {
		if err := put(t, b, fmt.Sprintf("before-%d", i), 1); err != nil {
			t.Fatal(err)
		}
	}
	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := put(t, b, fmt.Sprintf("during-%d", i), 1); err != nil {
				t.Error(err)
				return
			}
			acked.Store(int64(i + 1))
		}
	}()
	time.Sleep(50 * time.Millisecond)
	ackedBefore := acked.Load()
	backupDir := filepath.Join(t.TempDir(), "backup")
	if _, err := b.Backup(ctx, backupDir); err != nil {
		t.Fatal(err)
	}
	ackedAfter := acked.Load()
	close(stop)
	wg.Wait()

	if _, err := b.Backup(ctx, backupDir); err == nil {
		t.Error("a second backup into the same directory overwrote the first")
	}
	restored := filepath.Join(t.TempDir(), "restored")
	if err := sqlite.Restore(ctx, backupDir, restored); err != nil {
		t.Fatal(err)
	}
	if err := sqlite.Restore(ctx, backupDir, restored); err == nil {
		t.Error("restore over an existing database succeeded")
	}
	if err := sqlite.Restore(ctx, t.TempDir(), filepath.Join(t.TempDir(), "x")); err == nil {
		t.Error("restore from a directory without a backup succeeded")
	}
	rb, err := sqlite.Open(ctx, restored)
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	page, err := rb.Search(ctx, storage.Query{Types: []string{"Patient"}, Count: 0, Total: true})
	if err != nil {
		t.Fatal(err)
	}
	during := page.Total - 50
	if during < ackedBefore || during > ackedAfter+1 {
		t.Errorf("backup holds %d of the concurrent writes; acknowledged were %d before it started and %d after it ended", during, ackedBefore, ackedAfter)
	}
	// A snapshot: the writes it holds are exactly the first ones.
	for i := int64(0); i < during; i++ {
		if _, err := rb.Read(ctx, "Patient", fmt.Sprintf("during-%d", i)); err != nil {
			t.Fatalf("backup holds %d concurrent writes but not during-%d: %v", during, i, err)
		}
	}
	if _, err := rb.Read(ctx, "Patient", fmt.Sprintf("during-%d", during)); err == nil {
		t.Errorf("backup holds during-%d beyond its count", during)
	}
	// The restored store takes writes.
	if err := put(t, rb, "after-restore", 1); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(restored); len(entries) == 0 {
		t.Fatal("restored directory is empty")
	}
}

// TestFull fills a database capped with WithMaxBytes: the write that does
// not fit fails with storage.ErrFull and leaves nothing (not one of its
// resources, the ones before it intact), and once room is made the same
// write succeeds on the same open backend.
func TestFull(t *testing.T) {
	ctx := context.Background()
	b, err := sqlite.Open(ctx, t.TempDir(), sqlite.WithMaxBytes(256<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	big := make([]byte, 8<<10)
	for i := range big {
		big[i] = 'a' + byte(i%26)
	}
	write := func(i int) storage.Write {
		return storage.Write{Record: storage.Record{Type: "Binary", ID: fmt.Sprintf("b%d", i), VersionID: 1,
			LastUpdated: time.Now().UTC().Truncate(time.Millisecond), Method: "PUT",
			JSON: []byte(fmt.Sprintf(`{"resourceType":"Binary","id":"b%d","data":"%s"}`, i, big))}}
	}
	stored := 0
	var full error
	for i := 0; i < 200; i++ {
		// Two resources per Commit: all or nothing.
		if _, err := b.Commit(ctx, write(2*i), write(2*i+1)); err != nil {
			full = err
			break
		}
		stored += 2
	}
	if !errors.Is(full, storage.ErrFull) {
		t.Fatalf("after %d resources: %v, want storage.ErrFull", stored, full)
	}
	for _, i := range []int{stored, stored + 1} {
		if _, err := b.Read(ctx, "Binary", fmt.Sprintf("b%d", i)); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("b%d of the refused Commit: %v, want not found", i, err)
		}
	}
	if _, err := b.Read(ctx, "Binary", fmt.Sprintf("b%d", stored-1)); err != nil {
		t.Errorf("the last stored resource: %v", err)
	}
	if err := b.SetMaxBytes(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(ctx, write(stored), write(stored+1)); err != nil {
		t.Errorf("after making room: %v", err)
	}
}
