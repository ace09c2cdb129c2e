// Command dbsize reports what takes the space in a SQLite data directory
// of Anodyne (issue 10, storage): the bytes of every table and index (from
// SQLite's dbstat virtual table), grouped by table, the files of the
// directory (database, WAL, shared memory) before and after a checkpoint,
// the stored resource JSON and index-entry columns of the versions table,
// and the ratio of the whole to the JSON it was loaded from.
//
// It owns no product code and must not be imported. It opens the database
// with its own connection: the server must not be running on it.
//
//	go run ./bench/fhirload -import-only -resources 100000
//	go run ./bench/dbsize -data $TMPDIR/anodyne-fhirload/data-s1-n100000 \
//	    -json $TMPDIR/anodyne-fhirload/ndjson-s1-n100000
//
// -json is the directory (or file) of the NDJSON that was loaded: its size
// is the denominator of the ratio. -checkpoint=false leaves the WAL as it
// is (the default truncates it with PRAGMA wal_checkpoint(TRUNCATE), as a
// clean shutdown would, and reports both).
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	_ "modernc.org/sqlite"
)

func main() {
	log.SetFlags(0)
	data := flag.String("data", "", "the data directory (holding anodyne.db)")
	jsonPath := flag.String("json", "", "the NDJSON directory or file that was loaded (for the ratio)")
	checkpoint := flag.Bool("checkpoint", true, "checkpoint and truncate the WAL before measuring")
	flag.Parse()
	if *data == "" {
		log.Fatal("-data is required")
	}
	if err := run(context.Background(), os.Stdout, *data, *jsonPath, *checkpoint); err != nil {
		log.Fatal(err)
	}
}

// object is one table or index as dbstat sees it.
type object struct {
	name, table, kind string
	pages, bytes      int64
	payload, unused   int64
	rows              int64 // tables only (-1 for indexes)
}

func run(ctx context.Context, out io.Writer, dir, jsonPath string, checkpoint bool) error {
	path := filepath.Join(dir, "anodyne.db")
	if _, err := os.Stat(path); err != nil {
		return err
	}
	before, err := files(dir)
	if err != nil {
		return err
	}
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if checkpoint {
		var busy, logged, done int
		if err := db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logged, &done); err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
		if busy != 0 {
			return fmt.Errorf("checkpoint: the database is busy (is a server running on it?)")
		}
	}
	after, err := files(dir)
	if err != nil {
		return err
	}
	objs, err := objects(ctx, db)
	if err != nil {
		return err
	}
	var jsonBytes int64
	if jsonPath != "" {
		if jsonBytes, err = ndjsonSize(jsonPath); err != nil {
			return err
		}
	}

	fmt.Fprintf(out, "data directory %s\n", dir)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "file\tbefore checkpoint MB\tafter MB\t")
	names := slices.Sorted(func(yield func(string) bool) {
		seen := map[string]bool{}
		for _, m := range []map[string]int64{before, after} {
			for n := range m {
				if !seen[n] && !yield(n) {
					return
				}
				seen[n] = true
			}
		}
	})
	var total int64
	for _, n := range names {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t\n", n, mb(before[n]), mb(after[n]))
		total += after[n]
	}
	fmt.Fprintf(tw, "total\t\t%.1f\t\n", mb(total))
	tw.Flush()

	// Per object, biggest first, then per table with its indexes.
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "object\ttable\tkind\trows\tMB\t% of db\tpayload MB\tunused MB\t")
	var dbBytes int64
	for _, o := range objs {
		dbBytes += o.bytes
	}
	for _, o := range objs {
		rows := ""
		if o.rows >= 0 {
			rows = fmt.Sprint(o.rows)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t\n", o.name, o.table, o.kind, rows, mb(o.bytes), pct(o.bytes, dbBytes), mb(o.payload), mb(o.unused))
	}
	tw.Flush()

	fmt.Fprintln(out)
	group := map[string]int64{}
	for _, o := range objs {
		group[o.table] += o.bytes
	}
	tables := slices.SortedFunc(func(yield func(string) bool) {
		for t := range group {
			if !yield(t) {
				return
			}
		}
	}, func(a, b string) int { return int(group[b] - group[a]) })
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "table with its indexes\tMB\t% of db\t")
	for _, t := range tables {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t\n", t, mb(group[t]), pct(group[t], dbBytes))
	}
	tw.Flush()

	if err := versionColumns(ctx, out, db); err != nil {
		return err
	}
	if jsonBytes > 0 {
		fmt.Fprintf(out, "\nNDJSON loaded: %.1f MB; data directory after checkpoint: %.1f MB = %.2fx the NDJSON\n", mb(jsonBytes), mb(total), float64(total)/float64(jsonBytes))
	}
	return nil
}

// objects reads dbstat's aggregate per object and the row count of each
// table.
func objects(ctx context.Context, db *sql.DB) ([]object, error) {
	rows, err := db.QueryContext(ctx, `SELECT d.name, COALESCE(m.tbl_name, d.name), COALESCE(m.type, 'internal'),
		d.pageno, d.pgsize, d.payload, d.unused
		FROM dbstat AS d LEFT JOIN sqlite_schema AS m ON m.name = d.name WHERE d.aggregate = TRUE ORDER BY d.pgsize DESC`)
	if err != nil {
		return nil, fmt.Errorf("dbstat: %w", err)
	}
	defer rows.Close()
	var out []object
	for rows.Next() {
		var o object
		if err := rows.Scan(&o.name, &o.table, &o.kind, &o.pages, &o.bytes, &o.payload, &o.unused); err != nil {
			return nil, fmt.Errorf("dbstat: %w", err)
		}
		o.rows = -1
		if strings.HasPrefix(o.name, "sqlite_autoindex_") {
			o.kind = "index"
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("dbstat: %w", err)
	}
	for i := range out {
		if out[i].kind != "table" {
			continue
		}
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM "`+out[i].name+`"`).Scan(&out[i].rows); err != nil {
			return nil, fmt.Errorf("count %s: %w", out[i].name, err)
		}
	}
	return out, nil
}

// versionColumns splits the versions table's payload into its columns.
func versionColumns(ctx context.Context, out io.Writer, db *sql.DB) error {
	var n, cur, jsonB, entriesB, curJSON int64
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(LENGTH(json)), 0), COALESCE(SUM(LENGTH(entries)), 0) FROM versions`).
		Scan(&n, &jsonB, &entriesB); err != nil {
		return fmt.Errorf("versions columns: %w", err)
	}
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(LENGTH(v.json)), 0) FROM resources r JOIN versions v ON v.seq = r.seq`).
		Scan(&cur, &curJSON); err != nil {
		return fmt.Errorf("current versions: %w", err)
	}
	fmt.Fprintf(out, "\nversions: %d rows (%d current); json column %.1f MB stored (current versions %.1f MB), entries column %.1f MB\n",
		n, cur, mb(jsonB), mb(curJSON), mb(entriesB))
	return nil
}

func files(dir string) (map[string]int64, error) {
	es, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, e := range es {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, err
		}
		out[e.Name()] = fi.Size()
	}
	return out, nil
}

func ndjsonSize(path string) (int64, error) {
	var n int64
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.HasSuffix(p, ".ndjson") {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

func mb(n int64) float64 { return float64(n) / 1e6 }

func pct(n, of int64) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}
