package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
)

// TestMongoShardSetup: --print writes the three admin commands for the
// named database; running them on a server that is not a mongos (the
// embedded FerretDB) fails with a message saying what is needed.
func TestMongoShardSetup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := mongotest.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	db := mongotest.Database(t)
	out := runCmd(t, false, "mongo", "shard-setup", "--mongodb-uri", srv.URI, "--mongodb-database", db, "--print")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		`{"enableSharding":"` + db + `"}`,
		`{"shardCollection":"` + db + `.resources","key":{"pk":"hashed"}}`,
		`{"shardCollection":"` + db + `.history","key":{"_id":1}}`,
	}
	if len(lines) != len(want) {
		t.Fatalf("printed %q, want %q", lines, want)
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("command %d = %s, want %s", i, lines[i], want[i])
		}
	}
	if srv.FerretDB {
		err := run(ctx, []string{"mongo", "shard-setup", "--mongodb-uri", srv.URI, "--mongodb-database", db}, io.Discard, io.Discard, func(string) string { return "" }, nil)
		if err == nil || !strings.Contains(err.Error(), "mongos") {
			t.Errorf("shard-setup on FerretDB: %v, want an error with a hint about mongos", err)
		}
	}
	runCmd(t, true, "mongo", "shard-setup")
}
