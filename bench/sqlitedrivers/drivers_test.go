//go:build sqlitedrivers

// How to run (needs cgo and a C compiler for mattn/go-sqlite3):
//
//	CGO_ENABLED=1 go test -tags sqlitedrivers -run '^$' -bench . -benchtime 2s ./bench/sqlitedrivers/
//	CGO_ENABLED=1 go test -tags sqlitedrivers -run TestBinarySize -v ./bench/sqlitedrivers/
//
// Both drivers get the same database/sql usage, the same schema (a
// versions table shaped like storage/sqlite's, ~1.5 KB JSON rows, and a
// date index table) and the same pragmas, set with PRAGMA statements on
// the connection (not driver-specific DSN options) and read back before
// measuring: journal_mode=WAL, synchronous=FULL, busy_timeout=10000. Each
// store uses one connection, as storage/sqlite's writer does.
//
// Measured:
//   - Commit: one durable single-row INSERT transaction (fsync-bound).
//   - BatchInsert: 1,000 rows per transaction (rows/s).
//   - PointRead: SELECT one row by (type, id, version) at 100,000 rows.
//   - Range: 100 rows by a date range over the index table at 100,000 rows.
//   - TestBinarySize: size of a minimal program that opens each driver.

package sqlitedrivers

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers "sqlite3"
	_ "modernc.org/sqlite"          // registers "sqlite"
)

// drivers are the database/sql driver names under test.
var drivers = []struct{ name, driver string }{
	{"modernc", "sqlite"},
	{"mattn", "sqlite3"},
}

var schema = []string{
	`CREATE TABLE versions (
		seq INTEGER PRIMARY KEY AUTOINCREMENT,
		type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
		last_updated INTEGER NOT NULL, deleted INTEGER NOT NULL, method TEXT NOT NULL, json BLOB,
		UNIQUE (type, id, version)) STRICT`,
	`CREATE TABLE idx_date (res_pk INTEGER NOT NULL, param TEXT NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL) STRICT`,
	`CREATE INDEX idx_date_low ON idx_date (param, low)`,
}

const (
	insertVersion = `INSERT INTO versions (type, id, version, last_updated, deleted, method, json) VALUES (?, ?, 1, ?, 0, 'POST', ?)`
	insertDate    = `INSERT INTO idx_date (res_pk, param, low, high) VALUES (?, 'date', ?, ?)`
	pointRead     = `SELECT seq, json FROM versions WHERE type = ? AND id = ? AND version = 1`
	rangeQuery    = `SELECT v.seq, v.id, v.json FROM idx_date d JOIN versions v ON v.seq = d.res_pk
		WHERE d.param = 'date' AND d.low >= ? AND d.low < ? ORDER BY d.low LIMIT 100`
)

var base = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// payload is a ~1.5 KB JSON document, the size of a vital-signs Observation.
func payload(i int) []byte {
	pad := strings.Repeat("x", 1400)
	return fmt.Appendf(nil, `{"resourceType":"Observation","id":"obs-%07d","pad":%q}`, i, pad)
}

// open opens a fresh store with the common pragmas and schema and checks
// that the pragmas took effect.
func open(tb testing.TB, driver string) *sql.DB {
	tb.Helper()
	ctx := context.Background()
	db, err := sql.Open(driver, filepath.Join(tb.TempDir(), "bench.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	for _, p := range []string{"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA busy_timeout=10000"} {
		if _, err := db.ExecContext(ctx, p); err != nil {
			tb.Fatalf("%s: %s: %v", driver, p, err)
		}
	}
	var mode string
	var sync int
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		tb.Fatalf("%s: journal_mode = %q, %v", driver, mode, err)
	}
	if err := db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
		tb.Fatalf("%s: synchronous = %d, %v; want 2 (FULL)", driver, sync, err)
	}
	for _, s := range schema {
		if _, err := db.ExecContext(ctx, s); err != nil {
			tb.Fatalf("%s: schema: %v", driver, err)
		}
	}
	return db
}

// insert writes rows [from, to) in one transaction.
func insert(ctx context.Context, db *sql.DB, from, to int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	vs, err := tx.PrepareContext(ctx, insertVersion)
	if err != nil {
		return fmt.Errorf("prepare version: %w", err)
	}
	defer vs.Close()
	ds, err := tx.PrepareContext(ctx, insertDate)
	if err != nil {
		return fmt.Errorf("prepare date: %w", err)
	}
	defer ds.Close()
	for i := from; i < to; i++ {
		ms := base.Add(time.Duration(i) * time.Minute).UnixMilli()
		res, err := vs.ExecContext(ctx, "Observation", fmt.Sprintf("obs-%07d", i), ms, payload(i))
		if err != nil {
			return fmt.Errorf("insert version %d: %w", i, err)
		}
		seq, err := res.LastInsertId()
		if err != nil {
			return fmt.Errorf("seq %d: %w", i, err)
		}
		if _, err := ds.ExecContext(ctx, seq, ms, ms); err != nil {
			return fmt.Errorf("insert date %d: %w", i, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func BenchmarkCommit(b *testing.B) {
	for _, d := range drivers {
		b.Run(d.name, func(b *testing.B) {
			db := open(b, d.driver)
			i := 0
			for b.Loop() {
				if err := insert(b.Context(), db, i, i+1); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func BenchmarkBatchInsert(b *testing.B) {
	const batch = 1000
	for _, d := range drivers {
		b.Run(d.name, func(b *testing.B) {
			db := open(b, d.driver)
			i := 0
			for b.Loop() {
				if err := insert(b.Context(), db, i, i+batch); err != nil {
					b.Fatal(err)
				}
				i += batch
			}
			b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

const loaded = 100_000

// load100k fills a store with 100,000 rows, 1,000 per transaction.
func load100k(b *testing.B, driver string) *sql.DB {
	b.Helper()
	db := open(b, driver)
	start := time.Now()
	for i := 0; i < loaded; i += 1000 {
		if err := insert(b.Context(), db, i, i+1000); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("%s: loaded %d rows in %v", driver, loaded, time.Since(start))
	return db
}

func BenchmarkAt100k(b *testing.B) {
	for _, d := range drivers {
		b.Run(d.name, func(b *testing.B) {
			db := load100k(b, d.driver)
			b.Run("PointRead", func(b *testing.B) {
				st, err := db.PrepareContext(b.Context(), pointRead)
				if err != nil {
					b.Fatal(err)
				}
				defer st.Close()
				i := 0
				for b.Loop() {
					var seq int64
					var js []byte
					id := fmt.Sprintf("obs-%07d", (i*7919)%loaded)
					if err := st.QueryRowContext(b.Context(), "Observation", id).Scan(&seq, &js); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.Run("Range", func(b *testing.B) {
				st, err := db.PrepareContext(b.Context(), rangeQuery)
				if err != nil {
					b.Fatal(err)
				}
				defer st.Close()
				i := 0
				for b.Loop() {
					from := base.Add(time.Duration((i*7919)%(loaded-200)) * time.Minute)
					rows, err := st.QueryContext(b.Context(), from.UnixMilli(), from.Add(200*time.Minute).UnixMilli())
					if err != nil {
						b.Fatal(err)
					}
					n := 0
					for rows.Next() {
						var seq int64
						var id string
						var js []byte
						if err := rows.Scan(&seq, &id, &js); err != nil {
							b.Fatal(err)
						}
						n++
					}
					if err := rows.Err(); err != nil {
						b.Fatal(err)
					}
					rows.Close()
					if n != 100 {
						b.Fatalf("range returned %d rows, want 100", n)
					}
					i++
				}
			})
		})
	}
}

// TestBinarySize builds a minimal program per driver (open, one query) and
// logs the executable sizes; a baseline without any driver shows what the
// driver itself adds.
func TestBinarySize(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three programs")
	}
	progs := map[string]string{
		"none":    "",
		"modernc": `_ "modernc.org/sqlite"`,
		"mattn":   `_ "github.com/mattn/go-sqlite3"`,
	}
	// The programs are built inside this module so that they use its go.mod.
	dir, err := os.MkdirTemp(".", "sizeprog-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	out := t.TempDir()
	sizes := map[string]int64{}
	for _, name := range []string{"none", "modernc", "mattn"} {
		src := filepath.Join(dir, name)
		if err := os.MkdirAll(src, 0o750); err != nil {
			t.Fatal(err)
		}
		prog := fmt.Sprintf(`package main

import (
	"database/sql"
	"fmt"
	"os"
	%s
)

func main() {
	db, err := sql.Open(os.Args[1], ":memory:")
	if err != nil {
		fmt.Println(err)
		return
	}
	var v string
	fmt.Println(db.QueryRow("SELECT sqlite_version()").Scan(&v), v)
}
`, progs[name])
		if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(prog), 0o600); err != nil {
			t.Fatal(err)
		}
		exe := filepath.Join(out, name)
		cmd := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-o", exe, "./"+src)
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, msg)
		}
		fi, err := os.Stat(exe)
		if err != nil {
			t.Fatal(err)
		}
		sizes[name] = fi.Size()
	}
	for _, name := range []string{"modernc", "mattn"} {
		t.Logf("%-8s %6.2f MB (driver adds %5.2f MB)", name, float64(sizes[name])/1e6, float64(sizes[name]-sizes["none"])/1e6)
	}
	t.Logf("%-8s %6.2f MB", "none", float64(sizes["none"])/1e6)
}
