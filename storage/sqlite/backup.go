package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// dbFile is the database file's name inside a data directory.
const dbFile = "anodyne.db"

// Backup writes a consistent copy of the database, as of one moment, to
// the directory dir (created; it must not hold a database already). It
// runs VACUUM INTO on a read connection: a read transaction sees one
// snapshot of the WAL database, so writers go on while it copies and the
// copy holds every commit before that moment and none after. The copy is
// compacted and needs no WAL to be read.
func (b *Backend) Backup(ctx context.Context, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("sqlite: backup: %w", err)
	}
	dest := filepath.Join(dir, dbFile)
	if _, err := os.Stat(dest); err == nil {
		return "", fmt.Errorf("sqlite: backup: %s exists; back up into an empty directory", dest)
	}
	// A connection of its own: the read pool is query_only, which refuses
	// VACUUM INTO, and the writer must stay free for writes.
	conn, err := sql.Open("sqlite", b.path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return "", fmt.Errorf("sqlite: backup: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "VACUUM INTO ?", dest); err != nil {
		_ = os.Remove(dest)
		return "", fmt.Errorf("sqlite: backup into %s: %w", dest, err)
	}
	if err := checkFile(ctx, dest); err != nil {
		return "", fmt.Errorf("sqlite: backup %s: %w", dest, err)
	}
	return dest, nil
}

// Restore puts the database of a backup made by Backup into the data
// directory dir, which must hold no database (a server must not be
// running on it). The backup is checked before anything is copied, and
// the copy lands under a temporary name renamed into place, so that an
// interrupted restore leaves no half-written database behind.
func Restore(ctx context.Context, backupDir, dir string) error {
	src := filepath.Join(backupDir, dbFile)
	if err := checkFile(ctx, src); err != nil {
		return fmt.Errorf("sqlite: restore from %s: %w", src, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("sqlite: restore: %w", err)
	}
	dest := filepath.Join(dir, dbFile)
	for _, p := range []string{dest, dest + "-wal"} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("sqlite: restore: %s exists; restore into an empty data directory", p)
		}
	}
	tmp := dest + ".restoring"
	if err := copyFile(src, tmp); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("sqlite: restore: %w", err)
	}
	if err := os.Rename(tmp, dest); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("sqlite: restore: %w", err)
	}
	return syncDir(dir)
}

// checkFile opens a database file read-only and runs SQLite's integrity
// check, so that neither a backup nor a restore hands over a damaged file.
func checkFile(ctx context.Context, path string) error {
	if _, err := os.Stat(path); err != nil {
		return err
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=query_only(1)")
	if err != nil {
		return err
	}
	defer db.Close()
	var res string
	if err := db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&res); err != nil {
		return fmt.Errorf("integrity check: %w", err)
	}
	if res != "ok" {
		return fmt.Errorf("integrity check: %s", res)
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE name = 'resources'").Scan(&n); err != nil || n != 1 {
		return errors.Join(errors.New("not an Anodyne database (no resources table)"), err)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sqlite: sync %s: %w", dir, err)
	}
	return nil
}
