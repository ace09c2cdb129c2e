// Package mongotest gives tests a MongoDB-compatible server: a real MongoDB
// when ANODYNE_TEST_MONGODB_URI is set, otherwise one FerretDB (SQLite
// handler) embedded in the test process.
//
// It exists so that FerretDB links only into test binaries: the product
// imports storage/mongo, never this package. It knows nothing of the
// backend's collections or layout.
package mongotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// EnvURI names the environment variable that points the tests at a real MongoDB.
const EnvURI = "ANODYNE_TEST_MONGODB_URI"

// Server is a running MongoDB-compatible server shared by the tests of one
// test binary. Each test takes its own database from it (see Database).
type Server struct {
	URI      string
	FerretDB bool // true when the server is the embedded FerretDB

	stop func()
	done chan error
}

// Start returns a server for the tests of one binary: the real MongoDB of
// ANODYNE_TEST_MONGODB_URI, or an embedded FerretDB keeping its files in dir.
// Call it once (from TestMain or a sync.Once) and Stop it at the end.
func Start(ctx context.Context, dir string) (*Server, error) {
	if uri := os.Getenv(EnvURI); uri != "" {
		return &Server{URI: uri, stop: func() {}}, nil
	}
	return StartFerretDB(ctx, dir, "127.0.0.1:0")
}

// StartFerretDB starts an embedded FerretDB listening on addr and keeping
// its files in dir, whatever ANODYNE_TEST_MONGODB_URI says: for tests that
// stop the server and start it again on the same address and files (an
// outage), which a shared real MongoDB cannot offer.
func StartFerretDB(ctx context.Context, dir, addr string) (*Server, error) {
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: addr},
		Handler:   "sqlite",
		SQLiteURL: "file:" + strings.TrimSuffix(dir, "/") + "/",
		// FerretDB logs every connection at info level; tests only need its errors.
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, fmt.Errorf("mongotest: configure FerretDB: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(runCtx) }()

	// MongoDBURI blocks until the listener is bound; guard it with the
	// caller's deadline so that a FerretDB failing at start-up cannot hang
	// the test binary.
	uriCh := make(chan string, 1)
	go func() { uriCh <- f.MongoDBURI() }()
	select {
	case uri := <-uriCh:
		return &Server{URI: uri, FerretDB: true, stop: cancel, done: done}, nil
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("mongotest: FerretDB stopped at start-up: %w", err)
	case <-ctx.Done():
		cancel()
		return nil, fmt.Errorf("mongotest: waiting for FerretDB to listen: %w", ctx.Err())
	}
}

// Stop shuts the embedded FerretDB down (a no-op for a real MongoDB).
func (s *Server) Stop() error {
	s.stop()
	if s.done == nil {
		return nil
	}
	select {
	case err := <-s.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("mongotest: FerretDB run: %w", err)
		}
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("mongotest: FerretDB did not stop within 10s")
	}
}

// Database returns a fresh database name, unique per call, so that every
// test case starts from an empty store on the shared server.
func Database(t testing.TB) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("mongotest: random database name: %v", err)
	}
	return "t_" + hex.EncodeToString(b[:])
}

// Shared starts one server per test binary on first use and returns it on
// every later call. The returned stop function belongs in TestMain.
type Shared struct {
	once sync.Once
	srv  *Server
	err  error
	dir  string
}

// NewShared prepares a lazily started server keeping FerretDB's files in dir.
func NewShared(dir string) *Shared { return &Shared{dir: dir} }

// Get starts the server on first call and fails the test if it cannot.
func (s *Shared) Get(t testing.TB) *Server {
	t.Helper()
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		s.srv, s.err = Start(ctx, s.dir)
	})
	if s.err != nil {
		t.Fatalf("%v", s.err)
	}
	return s.srv
}

// Stop stops the server if it was started.
func (s *Shared) Stop() error {
	if s.srv == nil {
		return nil
	}
	return s.srv.Stop()
}

// Outage is an embedded FerretDB that a test can stop and start again on the
// same address and files, to play a database outage and its recovery.
type Outage struct {
	t    testing.TB
	dir  string
	addr string
}

// NewOutage reserves a free local address and a directory for an outage
// test's FerretDB; call Start to run it.
func NewOutage(t testing.TB) *Outage {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return &Outage{t: t, dir: t.TempDir(), addr: addr}
}

// Start runs the FerretDB (again), failing the test if it cannot.
func (o *Outage) Start() *Server {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := StartFerretDB(ctx, o.dir, o.addr)
	if err != nil {
		o.t.Fatalf("starting FerretDB on %s: %v", o.addr, err)
	}
	return srv
}
