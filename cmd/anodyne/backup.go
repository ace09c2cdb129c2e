package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// backuper is the optional backend interface of an online backup (SQLite).
type backuper interface {
	Backup(ctx context.Context, dir string) (string, error)
}

// errMongoBackup answers backup and restore on MongoDB: its own tools
// copy a replica set consistently, Anodyne has nothing to add.
var errMongoBackup = errors.New("backup and restore copy a SQLite store; for MongoDB use mongodump --oplog and mongorestore --oplogReplay (README: Backup and restore)")

// backupCommand is "anodyne backup [flags] DIR": a consistent copy of a
// SQLite store, taken while a server may be running and writing on it.
func backupCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var cfg serveConfig
	fs := flag.NewFlagSet("anodyne backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	storeFlags(fs, &cfg)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: anodyne backup [flags] DIR

Copies the SQLite store of --data-dir into the new or empty directory DIR as
it is at one moment: every write acknowledged before the copy began and none
after, while a server goes on serving and writing. The copy is checked
(integrity check) before the command reports success. Restore it with
"anodyne restore DIR".

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseStoreCommand(fs, args, getenv); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usagef("backup: want one backup directory, got %d arguments", fs.NArg())
	}
	if cfg.MongoURI != "" {
		return errMongoBackup
	}
	began := time.Now()
	// The store is opened without its lock: a backup runs next to the
	// server that owns it, reading one snapshot of the WAL database.
	st, err := openBackend(ctx, cfg, useEdit)
	if err != nil {
		return err
	}
	defer st.Close()
	b, ok := storage.As[backuper](st.backend)
	if !ok {
		return fmt.Errorf("backup: the %s backend cannot make an online backup", st.kind)
	}
	path, err := b.Backup(ctx, fs.Arg(0))
	if err != nil {
		return fmt.Errorf("backup of %s: %w", cfg.DataDir, err)
	}
	var size int64
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	fmt.Fprintf(stdout, "backed up %s to %s (%d bytes, checked) in %s\n", cfg.DataDir, path, size, time.Since(began).Round(time.Millisecond))
	return nil
}

// restoreCommand is "anodyne restore [flags] DIR": the backup in DIR
// becomes the store of --data-dir, which must hold none.
func restoreCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var cfg serveConfig
	fs := flag.NewFlagSet("anodyne restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	storeFlags(fs, &cfg)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: anodyne restore [flags] DIR

Puts the backup that "anodyne backup" wrote into DIR in place as the store of
--data-dir. The data directory must hold no database and no server may run
on it (its lock is taken for the restore); move an old store away first.
The backup is checked before anything is copied, and an interrupted restore
leaves no database behind.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseStoreCommand(fs, args, getenv); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usagef("restore: want one backup directory, got %d arguments", fs.NArg())
	}
	if cfg.MongoURI != "" {
		return errMongoBackup
	}
	src := fs.Arg(0)
	if _, err := os.Stat(filepath.Join(src, sqliteFile)); err != nil {
		return fmt.Errorf("restore: no backup in %s (no %s there)", src, sqliteFile)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("restore: creating data directory: %w", err)
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer lock.Close()
	if err := sqlite.Restore(ctx, src, cfg.DataDir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %s into %s\n", src, cfg.DataDir)
	return nil
}
