package mongo

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
)

// TestOutage stops the database under an open backend: calls fail with
// storage.ErrUnavailable within the selection timeout instead of hanging
// or looking like internal errors, a write refused during the outage is
// absent afterwards, and once the server is back the same backend serves
// again, with everything acknowledged before the outage intact.
func TestOutage(t *testing.T) {
	outage := mongotest.NewOutage(t)
	start := outage.Start
	srv := start()
	const timeout = time.Second
	b, err := Open(context.Background(), srv.URI, "outage", WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), WithServerSelectionTimeout(timeout))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	put := func(id string) error {
		_, err := b.Commit(ctx, storage.Write{Record: storage.Record{Type: "Patient", ID: id, VersionID: 1,
			LastUpdated: time.Now().UTC().Truncate(time.Millisecond), Method: "PUT", JSON: []byte(`{"resourceType":"Patient","id":"` + id + `"}`)}})
		return err
	}
	if err := put("before"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if _, err := b.Read(ctx, "Patient", "before"); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("read during the outage: %v, want storage.ErrUnavailable", err)
	}
	if err := put("during"); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("write during the outage: %v, want storage.ErrUnavailable", err)
	}
	if _, err := b.Search(ctx, storage.Query{Types: []string{"Patient"}, Count: 10}); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("search during the outage: %v, want storage.ErrUnavailable", err)
	}
	// The KV holds authorization state: a token check during an outage
	// must see "unavailable", not "not found" or an unclassified error.
	if _, err := b.KV().Get(ctx, "auth/x"); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("kv get during the outage: %v, want storage.ErrUnavailable", err)
	}
	if err := b.KV().Put(ctx, "auth/x", []byte("1"), 0); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("kv put during the outage: %v, want storage.ErrUnavailable", err)
	}
	if took := time.Since(began); took > 8*timeout {
		t.Errorf("five calls during the outage took %v; each should fail within about %v", took, timeout)
	}

	srv = start()
	defer srv.Stop()
	var rerr error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, rerr = b.Read(ctx, "Patient", "before"); rerr == nil {
			break
		}
	}
	if rerr != nil {
		t.Fatalf("after the server came back: %v", rerr)
	}
	if _, err := b.Read(ctx, "Patient", "during"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the write refused during the outage: %v, want not found", err)
	}
	if err := put("after"); err != nil {
		t.Errorf("write after the outage: %v", err)
	}
}
