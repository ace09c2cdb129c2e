package mongo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
)

// server is the one MongoDB-compatible server of this test binary, shared
// by every test (each with its own database) because starting FerretDB
// costs seconds.
var server *mongotest.Shared

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "anodyne-mongo-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server = mongotest.NewShared(dir)
	code := m.Run()
	if err := server.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// dbs remembers which database each opened backend uses, for reopening.
type dbs struct {
	mu sync.Mutex
	m  map[*Backend]string
}

func (d *dbs) put(b *Backend, name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[*Backend]string{}
	}
	d.m[b] = name
}

func (d *dbs) get(b *Backend) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m[b]
}

// open opens a backend on database name of the shared server.
func open(t testing.TB, name string) *Backend {
	t.Helper()
	srv := server.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The capability notes are logged once per Open; tests check them
	// through Capabilities instead of reading them on stderr.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := Open(ctx, srv.URI, name, WithLogger(quiet))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return b
}

// fresh opens a backend on a new, empty database and closes it at the end.
func fresh(t testing.TB) *Backend {
	t.Helper()
	b := open(t, mongotest.Database(t))
	t.Cleanup(func() { _ = b.Close() })
	return b
}
