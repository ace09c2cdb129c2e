package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/mongo"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// storeUse says what a command does with the store, which decides whether
// a missing SQLite directory is created and whether the directory is
// locked against other processes.
type storeUse struct {
	// create: a missing data directory is created (serve, import, and the
	// add commands of a first run); other commands refuse it, so that a
	// typo in --data-dir is an error instead of an empty new store.
	create bool
	// own: the command runs the FHIR engine on the store (serve, direct
	// import and export), whose background work (bulk jobs, group commit,
	// SearchParameter registration) assumes one process. It takes the
	// directory's exclusive lock. The clients and users commands do not:
	// they make small edits that SQLite's own locking keeps safe, and the
	// README promises that a running server sees them at once.
	own bool
}

var (
	useServe  = storeUse{create: true, own: true}  // serve, import
	useExport = storeUse{create: false, own: true} // direct export
	useAdd    = storeUse{create: true}             // clients add, users add
	useEdit   = storeUse{}                         // list, remove
)

// defaultMongoConnect is long enough for a replica set election, short
// enough that a wrong URI is noticed at once.
const defaultMongoConnect = 5 * time.Second

// redactURI is a MongoDB URI fit for messages: without its password.
func redactURI(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return "(unparsable URI)"
	}
	return u.Redacted()
}

// sqliteFile is the database file inside a data directory (the name
// storage/sqlite gives it; TestStoreMustExist fails if they part).
const sqliteFile = "anodyne.db"

// lockFile is the file in a SQLite data directory that the process owning
// the store holds an exclusive flock(2) on, with its pid inside for the
// message the next one gets.
const lockFile = "anodyne.lock"

// store is an open backend and, for SQLite opened to own it, the
// directory lock, released after the backend is closed.
type store struct {
	backend storage.Backend
	kind    string
	lock    *os.File
}

// Close closes the backend, then releases the lock.
func (s *store) Close() error {
	err := s.backend.Close()
	if s.lock != nil {
		if cerr := s.lock.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("releasing the data directory lock: %w", cerr)
		}
	}
	return err
}

// openBackend picks the database: MongoDB when a URI is given, else the
// SQLite directory.
func openBackend(ctx context.Context, cfg serveConfig, use storeUse) (*store, error) {
	if cfg.MongoURI != "" {
		// The patient partitioning comes from the R4 compartment
		// definitions alone, so every process computes the same one.
		reg, err := resources.Load(resources.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			return nil, fmt.Errorf("loading search parameters for MongoDB partitioning: %w", err)
		}
		if cfg.MongoConnect <= 0 {
			return nil, usagef("--mongodb-connect-timeout must be positive")
		}
		b, err := mongo.Open(ctx, cfg.MongoURI, cfg.MongoDB, mongo.WithConnectTimeout(cfg.MongoConnect), mongo.WithPartitioning(reg.Partitioning()))
		if errors.Is(err, mongo.ErrUnreachable) {
			return nil, fmt.Errorf("cannot reach MongoDB at %s within %s (--mongodb-connect-timeout): %w", redactURI(cfg.MongoURI), cfg.MongoConnect, err)
		}
		if err != nil {
			return nil, fmt.Errorf("opening MongoDB database %q at %s: %w", cfg.MongoDB, redactURI(cfg.MongoURI), err)
		}
		return &store{backend: b, kind: "mongodb"}, nil
	}
	if use.create {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("creating data directory: %w", err)
		}
	} else if _, err := os.Stat(filepath.Join(cfg.DataDir, sqliteFile)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no Anodyne store in %s (no %s there): check --data-dir or ANODYNE_DATA_DIR, or use --mongodb-uri", cfg.DataDir, sqliteFile)
		}
		return nil, fmt.Errorf("opening SQLite store in %s: %w", cfg.DataDir, err)
	}
	var lock *os.File
	if use.own {
		var err error
		if lock, err = lockDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	b, err := sqlite.Open(ctx, cfg.DataDir)
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return nil, fmt.Errorf("opening SQLite store in %s: %w", cfg.DataDir, err)
	}
	return &store{backend: b, kind: "sqlite", lock: lock}, nil
}

// lockDataDir takes the exclusive lock of a data directory without
// waiting. The lock is flock(2) on an open file, so it ends with the
// process however that ends (kill -9 included): a stale lock file never
// blocks the next start. The file is never removed: removing it could let
// two processes lock two different files of the same name.
func lockDataDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("opening the data directory lock %s: %w", path, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if errors.Is(err, unix.EWOULDBLOCK) {
		holder := "unknown pid"
		if raw, rerr := io.ReadAll(io.LimitReader(f, 32)); rerr == nil {
			if pid, perr := strconv.Atoi(string(bytes.TrimSpace(raw))); perr == nil {
				holder = "pid " + strconv.Itoa(pid)
			}
		}
		f.Close()
		return nil, fmt.Errorf("data directory %s is in use by another anodyne process (%s): stop it first, or go through it with --server", dir, holder)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking the data directory %s: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing the data directory lock %s: %w", path, err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing the data directory lock %s: %w", path, err)
	}
	return f, nil
}
