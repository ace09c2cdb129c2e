// Package sqlite is Anodyne's embedded storage backend: the storage.Backend
// contract over one SQLite database file (modernc.org/sqlite, pure Go),
// reached through database/sql.
//
// It owns the SQL schema and the translation of storage expressions into
// parameterised SQL. It must not know FHIR: it stores the JSON bytes and
// index entries it is handed and never looks inside them.
//
// # Files and connections
//
// Open creates dir/anodyne.db (plus its -wal and -shm files). The database
// runs in WAL mode with synchronous=FULL, so a Commit that returned nil
// survives a process or power failure. Writes go through a single
// connection (SQLite has one writer; serialising them in the pool avoids
// SQLITE_BUSY storms) with BEGIN IMMEDIATE transactions. Commits are
// grouped: a writer goroutine puts the Commits waiting at the same time
// into one transaction, each in its own SAVEPOINT, so that they share one
// fsync (WithGroupCommit).
// Reads use a separate pool of query_only connections that see the last
// committed state without blocking the writer.
//
// # Tables
//
//	schema_version(version)                    one row; the layout version for future migrations
//	versions(seq PK AUTOINCREMENT, type, id, version, last_updated, deleted, method, json, entries)
//	                                           every version ever written; json and entries compressed
//	                                           (codec.go: a tag byte, zstd with a pinned dictionary); seq is the global commit
//	                                           order (AUTOINCREMENT: never reused, even after deletes);
//	                                           entries: the version's own index entries (see entries.go),
//	                                           a delete's a copy of the deleted version's, NULL before schema 3
//	version_refs(param, ref_id, ref_type, seq) WITHOUT ROWID: the local references among those
//	                                           entries, so that a filtered history can be index-driven
//	resources(pk PK, type, id, version, seq, deleted)
//	                                           one row per logical resource: its current version
//	claims(claim PK, res_pk)                   conditional-create keys held by live resources
//	idx_string(res_pk, param, text, exact)
//	idx_token(res_pk, param, system, code, text)   idx_token_code covers (param, code, system, res_pk)
//	idx_reference(res_pk, param, ref_type, ref_id, ref_url, system, code)
//	idx_date(res_pk, param, low, high)         Unix milliseconds, both inclusive
//	idx_number(res_pk, param, num_low, num_high, num)
//	idx_quantity(res_pk, param, num_low, num_high, num, system, code)
//	idx_uri(res_pk, param, exact)
//	idx_composite(cid PK, res_pk, param)       one row per composite entry...
//	idx_composite_part(cid, part, res_pk, param, <every field column>)  WITHOUT ROWID, PK (cid, part)
//	                                           ...and one row per part, indexed by (param, part, value)
//	outbox(n PK AUTOINCREMENT, stream, id UNIQUE, seq, data)
//	                                           storage.Events until deleted (outbox.go)
//	kv(key PK, value, expires_at)              expires_at in Unix ms, NULL for no expiry; expired
//	                                           rows are deleted by Get, Take and a periodic sweep
//
// The index tables hold the entries of current, non-deleted versions only:
// an update replaces a resource's rows, a delete removes them. Each has an
// index led by (param, value) for lookups and one on (res_pk, param) for
// replacement and for the MIN/MAX sort subqueries.
//
// # Queries
//
// A Match becomes "r.pk IN (SELECT res_pk FROM idx_<kind> WHERE param = ? AND
// <condition on one row>)", so SQLite can drive the query from the value
// index; Chain and Has join idx_reference with resources. Sorting uses
// MIN (ascending) or MAX (descending) subqueries per resource, NULLs last,
// ties by type and id; paging is a keyset cursor over (sort keys, type, id)
// bound to the query it came from. Values are always bound parameters.
//
// That "collect, then sort" plan costs as many rows as the driving
// condition matches. For a broad filter (its driving condition has more
// index entries than a window of at least 1,000) in the default order or
// sorted by one date, Search instead walks an index already in the
// result order, (type, id) or the date's (param, value), checking each
// resource with EXISTS probes, and stops when the page is full; a walk
// that does not fill the page within the window hands over to the collect
// plan, so a misjudged filter costs at most the window. A search runs in
// one read transaction, so its total and its pages see one snapshot.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// schemaVersion is the layout this code writes and reads. Version 2 added
// res_pk, param and part to idx_composite_part (migrated on Open); version 3
// added versions.entries and version_refs (versions written before have no
// entries: a filtered history never shows them); version 4 added
// idx_ref_date (filled from the index tables on Open); version 5 stores
// versions.json and versions.entries compressed (codec.go; rows written
// before stay plain JSON and read as they are, so the migration changes no
// row: the version only keeps an older program from reading compressed
// rows as JSON); version 6 keeps NULL in the part columns a part's kind
// lacks, under partial value indexes (partColumns); version 7 makes
// idx_token_code and idx_quantity_res covering (coveringIndexes; no row
// changes).
const schemaVersion = 7

// coveringIndexes are the indexes schema 7 widened (dropped and made again
// by the migration from an older schema), so that $stats collects the
// values of a code from indexes alone (issue 11): the resources of a code
// with their res_pk, and each one's quantity with its unit and value.
var coveringIndexes = []string{
	`CREATE INDEX IF NOT EXISTS idx_token_code ON idx_token (param, code, system, res_pk)`,
	`CREATE INDEX IF NOT EXISTS idx_quantity_res ON idx_quantity (res_pk, param, system, code, num)`,
}

// Backend is a storage.Backend over one SQLite database.
type Backend struct {
	w      *sql.DB // the single writer connection
	cd     *codec  // the stored encoding of versions.json and versions.entries
	r      *sql.DB // read-only pool
	log    *slog.Logger
	path   string
	closer sync.Once
	cerr   error

	stopSweep context.CancelFunc // stops the expired-KV sweeper
	swept     sync.WaitGroup     // the sweeper goroutine

	queue   chan *commitReq // group commit requests; nil when group commit is off
	closing chan struct{}   // closed by Close: the writer goroutine ends
	writer  sync.WaitGroup  // the writer goroutine
	groups  atomic.Int64    // write transactions committed (for tests and metrics)
}

var (
	_ storage.Backend   = (*Backend)(nil)
	_ storage.Describer = (*Backend)(nil)
)

type config struct {
	readers     int
	busyTimeout int // milliseconds
	log         *slog.Logger
	sweepEvery  time.Duration
	groupMax    int
	maxBytes    int64
}

// Option configures Open.
type Option func(*config)

// WithReaders sets the size of the read connection pool (default 4).
func WithReaders(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.readers = n
		}
	}
}

// WithBusyTimeoutMillis sets how long a connection waits on a lock held by
// another process before failing (default 10000).
func WithBusyTimeoutMillis(ms int) Option {
	return func(c *config) {
		if ms > 0 {
			c.busyTimeout = ms
		}
	}
}

// WithKVSweepInterval sets how often expired KV records are deleted
// (default 10 minutes; d <= 0 turns the sweep off). Expired records are
// invisible either way; the sweep only keeps the table from growing.
func WithKVSweepInterval(d time.Duration) Option {
	return func(c *config) { c.sweepEvery = d }
}

// WithGroupCommit sets how many concurrent Commits may share one
// transaction and fsync (default 64; n <= 1 gives every Commit its own
// transaction). Durability is the same either way: Commit returns nil
// only after its group's transaction is synced.
func WithGroupCommit(n int) Option {
	return func(c *config) { c.groupMax = n }
}

// WithMaxBytes caps the database file at about n bytes (SQLite's
// max_page_count): writes beyond fail with storage.ErrFull and change
// nothing, as on a full disk. 0 (the default) is no cap.
func WithMaxBytes(n int64) Option { return func(c *config) { c.maxBytes = n } }

// SetMaxBytes changes the cap of WithMaxBytes on the open database, so an
// operator can make room without a restart (0 lifts it).
func (b *Backend) SetMaxBytes(ctx context.Context, n int64) error {
	pages := int64(0)
	if n > 0 {
		var size int64
		if err := b.w.QueryRowContext(ctx, "PRAGMA page_size").Scan(&size); err != nil {
			return fmt.Errorf("sqlite: page size: %w", err)
		}
		pages = max(n/size, 1)
	} else {
		pages = 1 << 32 // SQLite's largest; the file system is then the limit
	}
	// max_page_count is per connection: the writer is the only one that
	// grows the file.
	if _, err := b.w.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", pages)); err != nil {
		return fmt.Errorf("sqlite: max_page_count: %w", err)
	}
	return nil
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// Open opens (creating when needed) the database under dir.
func Open(ctx context.Context, dir string, opts ...Option) (*Backend, error) {
	cfg := config{readers: 4, busyTimeout: 10000, log: slog.Default(), sweepEvery: 10 * time.Minute, groupMax: 64}
	for _, o := range opts {
		o(&cfg)
	}
	if dir == "" {
		return nil, errors.New("sqlite: open: empty directory")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	path := filepath.Join(dir, dbFile)
	common := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=synchronous(FULL)&_pragma=foreign_keys(0)", cfg.busyTimeout)

	// The writer keeps 64 MB of pages (SQLite's default is 2 MB): inserts
	// into large indexes at random keys (references) then find their leaf
	// pages in memory instead of reading each from the file. Readers keep
	// the default: every Commit makes them drop their cache anyway.
	w, err := sql.Open("sqlite", path+"?"+common+"&_pragma=journal_mode(WAL)&_pragma=cache_size(-65536)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlite: open writer %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}

	r, err := sql.Open("sqlite", path+"?"+common+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open readers %s: %w", path, err)
	}
	r.SetMaxOpenConns(cfg.readers)
	r.SetMaxIdleConns(cfg.readers)
	cd, err := newCodec()
	if err != nil {
		w.Close()
		r.Close()
		return nil, err
	}
	b := &Backend{w: w, r: r, cd: cd, log: cfg.log, path: path}
	if err := b.Ping(ctx); err != nil {
		b.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if cfg.maxBytes > 0 {
		if err := b.SetMaxBytes(ctx, cfg.maxBytes); err != nil {
			b.Close()
			return nil, err
		}
	}
	b.closing = make(chan struct{})
	if cfg.groupMax > 1 {
		b.queue = make(chan *commitReq)
		wctx := context.WithoutCancel(ctx)
		b.writer.Go(func() { b.writeLoop(wctx, cfg.groupMax) })
	}
	if cfg.sweepEvery > 0 {
		// The sweeper outlives Open's ctx (a request or start-up context);
		// Close ends it.
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		b.stopSweep = cancel
		b.swept.Go(func() { b.sweepLoop(sctx, cfg.sweepEvery) })
	}
	cfg.log.DebugContext(ctx, "sqlite storage opened", "path", path, "readers", cfg.readers, "kv_sweep", cfg.sweepEvery)
	return b, nil
}

// Path is the database file.
func (b *Backend) Path() string { return b.path }

// Capabilities implements storage.Describer.
func (b *Backend) Capabilities(context.Context) storage.Capabilities {
	return storage.Capabilities{Name: "sqlite", AtomicCommit: true, Topology: "embedded", Transactions: true}
}

// Ping checks both pools.
func (b *Backend) Ping(ctx context.Context) error {
	if err := b.w.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping writer: %w", err)
	}
	var one int
	if err := b.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("sqlite: ping reader: %w", err)
	}
	return nil
}

// Close closes both pools. It is safe to call more than once.
func (b *Backend) Close() error {
	b.closer.Do(func() {
		if b.stopSweep != nil {
			b.stopSweep()
			b.swept.Wait()
		}
		if b.closing != nil {
			close(b.closing)
			b.writer.Wait()
		}
		b.cerr = errors.Join(b.r.Close(), b.w.Close())
		b.cd.close()
		if b.cerr != nil {
			b.cerr = fmt.Errorf("sqlite: close: %w", b.cerr)
		}
	})
	return b.cerr
}

// partColumns are the field columns of a composite part row (every field,
// since a part may be of any kind). Since schema 6 a part row holds NULL in
// the columns that its kind's own table lacks (partValues), and the value
// indexes are partial (WHERE <column> IS NOT NULL), so that each holds the
// parts of the kinds it serves only: a condition on a column implies it is
// not NULL, which lets SQLite use them.
const partColumns = `text TEXT, exact TEXT, system TEXT, code TEXT,
	ref_type TEXT, ref_id TEXT, ref_url TEXT,
	low INTEGER, high INTEGER, num_low REAL, num_high REAL, num REAL`

// partIndexes are the indexes of idx_composite_part (dropped and made
// again when the table is rebuilt by a migration).
var partIndexes = []string{
	`CREATE INDEX IF NOT EXISTS idx_composite_part_res ON idx_composite_part (res_pk)`,
	`CREATE INDEX IF NOT EXISTS idx_composite_part_code ON idx_composite_part (param, part, code, system) WHERE code IS NOT NULL`,
	`CREATE INDEX IF NOT EXISTS idx_composite_part_num ON idx_composite_part (param, part, num) WHERE num IS NOT NULL`,
	`CREATE INDEX IF NOT EXISTS idx_composite_part_low ON idx_composite_part (param, part, low) WHERE low IS NOT NULL`,
	`CREATE INDEX IF NOT EXISTS idx_composite_part_text ON idx_composite_part (param, part, text) WHERE text IS NOT NULL`,
	`CREATE INDEX IF NOT EXISTS idx_composite_part_ref ON idx_composite_part (param, part, ref_id, ref_type) WHERE ref_id IS NOT NULL`,
}

var schema = []string{
	`CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT`,
	`CREATE TABLE IF NOT EXISTS versions (
		seq INTEGER PRIMARY KEY AUTOINCREMENT,
		type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
		last_updated INTEGER NOT NULL, deleted INTEGER NOT NULL, method TEXT NOT NULL, json BLOB, entries BLOB,
		UNIQUE (type, id, version)) STRICT`,
	// One row per local reference among a version's own entries (a
	// delete's: those of the version it deletes), so that a history
	// filtered to a patient's compartment is driven by an index instead of
	// reading every version.
	`CREATE TABLE IF NOT EXISTS version_refs (param TEXT NOT NULL, ref_id TEXT NOT NULL, ref_type TEXT NOT NULL, seq INTEGER NOT NULL,
		PRIMARY KEY (param, ref_id, ref_type, seq)) STRICT, WITHOUT ROWID`,
	`CREATE INDEX IF NOT EXISTS versions_type_seq ON versions (type, seq)`,
	`CREATE INDEX IF NOT EXISTS versions_updated ON versions (last_updated)`,
	`CREATE TABLE IF NOT EXISTS resources (
		pk INTEGER PRIMARY KEY,
		type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
		seq INTEGER NOT NULL, deleted INTEGER NOT NULL,
		UNIQUE (type, id)) STRICT`,
	`CREATE TABLE IF NOT EXISTS claims (claim TEXT PRIMARY KEY, res_pk INTEGER NOT NULL) STRICT`,
	`CREATE INDEX IF NOT EXISTS claims_res ON claims (res_pk)`,

	`CREATE TABLE IF NOT EXISTS idx_string (res_pk INTEGER NOT NULL, param TEXT NOT NULL, text TEXT NOT NULL, exact TEXT NOT NULL) STRICT`,
	`CREATE INDEX IF NOT EXISTS idx_string_text ON idx_string (param, text)`,
	`CREATE INDEX IF NOT EXISTS idx_string_exact ON idx_string (param, exact)`,
	`CREATE INDEX IF NOT EXISTS idx_string_res ON idx_string (res_pk, param)`,

	`CREATE TABLE IF NOT EXISTS idx_token (res_pk INTEGER NOT NULL, param TEXT NOT NULL, system TEXT NOT NULL, code TEXT NOT NULL, text TEXT NOT NULL) STRICT`,
	coveringIndexes[0],
	`CREATE INDEX IF NOT EXISTS idx_token_res ON idx_token (res_pk, param)`,

	`CREATE TABLE IF NOT EXISTS idx_reference (res_pk INTEGER NOT NULL, param TEXT NOT NULL,
		ref_type TEXT NOT NULL, ref_id TEXT NOT NULL, ref_url TEXT NOT NULL, system TEXT NOT NULL, code TEXT NOT NULL) STRICT`,
	`CREATE INDEX IF NOT EXISTS idx_reference_target ON idx_reference (param, ref_id, ref_type)`,
	`CREATE INDEX IF NOT EXISTS idx_reference_url ON idx_reference (param, ref_url)`,
	`CREATE INDEX IF NOT EXISTS idx_reference_res ON idx_reference (res_pk, param)`,

	`CREATE TABLE IF NOT EXISTS idx_date (res_pk INTEGER NOT NULL, param TEXT NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL) STRICT`,
	`CREATE INDEX IF NOT EXISTS idx_date_low ON idx_date (param, low)`,
	`CREATE INDEX IF NOT EXISTS idx_date_high ON idx_date (param, high)`,
	`CREATE INDEX IF NOT EXISTS idx_date_res ON idx_date (res_pk, param)`,

	`CREATE TABLE IF NOT EXISTS idx_number (res_pk INTEGER NOT NULL, param TEXT NOT NULL, num_low REAL NOT NULL, num_high REAL NOT NULL, num REAL NOT NULL) STRICT`,
	`CREATE INDEX IF NOT EXISTS idx_number_num ON idx_number (param, num)`,
	`CREATE INDEX IF NOT EXISTS idx_number_res ON idx_number (res_pk, param)`,

	`CREATE TABLE IF NOT EXISTS idx_quantity (res_pk INTEGER NOT NULL, param TEXT NOT NULL, num_low REAL NOT NULL, num_high REAL NOT NULL, num REAL NOT NULL,
		system TEXT NOT NULL, code TEXT NOT NULL) STRICT`,
	`CREATE INDEX IF NOT EXISTS idx_quantity_num ON idx_quantity (param, num)`,
	coveringIndexes[1],

	`CREATE TABLE IF NOT EXISTS idx_uri (res_pk INTEGER NOT NULL, param TEXT NOT NULL, exact TEXT NOT NULL) STRICT`,
	`CREATE INDEX IF NOT EXISTS idx_uri_exact ON idx_uri (param, exact)`,
	`CREATE INDEX IF NOT EXISTS idx_uri_res ON idx_uri (res_pk, param)`,

	`CREATE TABLE IF NOT EXISTS idx_composite (cid INTEGER PRIMARY KEY, res_pk INTEGER NOT NULL, param TEXT NOT NULL) STRICT`,
	`CREATE INDEX IF NOT EXISTS idx_composite_param ON idx_composite (param)`,
	`CREATE INDEX IF NOT EXISTS idx_composite_res ON idx_composite (res_pk, param)`,
	// Part rows repeat res_pk and param so that a query on one part's value
	// is answered from a (param, part, value) index without visiting every
	// composite entry of the parameter.
	// Clustered on (cid, part): the value indexes carry the key, and the
	// join from one part to the others of its entry is one lookup.
	`CREATE TABLE IF NOT EXISTS idx_composite_part (cid INTEGER NOT NULL, part INTEGER NOT NULL, res_pk INTEGER NOT NULL, param TEXT NOT NULL, ` + partColumns + `,
		PRIMARY KEY (cid, part)) STRICT, WITHOUT ROWID`,

	// One row per (local reference entry, date entry) pair of a resource:
	// one patient's Observations of a code, newest first, are a range scan
	// of (param, ref_id, dparam, high) instead of every entry of the
	// patient probed and sorted (refWalk in search_walk.go).
	partIndexes[0], partIndexes[1], partIndexes[2], partIndexes[3], partIndexes[4], partIndexes[5],

	`CREATE TABLE IF NOT EXISTS idx_ref_date (param TEXT NOT NULL, ref_id TEXT NOT NULL, dparam TEXT NOT NULL, high INTEGER NOT NULL, low INTEGER NOT NULL,
		res_pk INTEGER NOT NULL, PRIMARY KEY (param, ref_id, dparam, high, res_pk, low)) STRICT, WITHOUT ROWID`,
	`CREATE INDEX IF NOT EXISTS idx_ref_date_low ON idx_ref_date (param, ref_id, dparam, low)`,
	`CREATE INDEX IF NOT EXISTS idx_ref_date_res ON idx_ref_date (res_pk)`,

	`CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at INTEGER) STRICT`,
	`CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires_at) WHERE expires_at IS NOT NULL`,
	// Added within version 2: a database without it gains it at Open, and
	// an older program simply never reads it.
	outboxSchema,
	outboxIndex,
}

// migrate brings the schema to schemaVersion (idempotent) in one transaction.
func migrate(ctx context.Context, w *sql.DB) error {
	tx, err := w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin schema: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, schema[0]); err != nil {
		return fmt.Errorf("create schema_version: %w", err)
	}
	v := 0 // a new database
	switch err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return fmt.Errorf("read schema version: %w", err)
	case v > schemaVersion:
		return fmt.Errorf("database schema version %d is newer than this program's %d", v, schemaVersion)
	}
	if v == 1 {
		// Version 1 kept part rows without res_pk and param; the new table
		// is created by the schema below and filled from the old one.
		for _, s := range []string{
			`DROP INDEX IF EXISTS idx_composite_part_cid`,
			`ALTER TABLE idx_composite_part RENAME TO idx_composite_part_v1`,
		} {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				return fmt.Errorf("migrate schema 1 to 2 (%s): %w", s, err)
			}
		}
	}
	if v >= 2 && v < 6 {
		// Before version 6 the part columns were NOT NULL and the value
		// indexes full: the table is made again (below) and filled from
		// the old one, whose rows keep their empty values (their kinds are
		// not recorded; a reindex or update writes NULLs).
		for _, s := range partIndexes {
			name := strings.Fields(s)[5]
			if _, err := tx.ExecContext(ctx, `DROP INDEX IF EXISTS `+name); err != nil {
				return fmt.Errorf("migrate schema %d to 6: %w", v, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `ALTER TABLE idx_composite_part RENAME TO idx_composite_part_v5`); err != nil {
			return fmt.Errorf("migrate schema %d to 6: %w", v, err)
		}
	}
	if v >= 1 && v < 7 {
		// The narrower indexes of the same names; the schema below makes
		// the covering ones.
		for _, s := range coveringIndexes {
			if _, err := tx.ExecContext(ctx, `DROP INDEX IF EXISTS `+strings.Fields(s)[5]); err != nil {
				return fmt.Errorf("migrate schema %d to 7: %w", v, err)
			}
		}
	}
	if v == 1 || v == 2 {
		var has int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info('versions') WHERE name = 'entries'`).Scan(&has); err != nil {
			return fmt.Errorf("migrate schema %d to 3: %w", v, err)
		}
		if has == 0 {
			if _, err := tx.ExecContext(ctx, `ALTER TABLE versions ADD COLUMN entries BLOB`); err != nil {
				return fmt.Errorf("migrate schema %d to 3: %w", v, err)
			}
		}
	}
	for _, s := range schema[1:] {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("create schema (%s): %w", strings.SplitN(s, "(", 2)[0], err)
		}
	}
	if v == 1 {
		for _, s := range []string{
			`INSERT INTO idx_composite_part (cid, res_pk, param, part, text, exact, system, code, ref_type, ref_id, ref_url, low, high, num_low, num_high, num)
				SELECT p.cid, c.res_pk, c.param, p.idx, p.text, p.exact, p.system, p.code, p.ref_type, p.ref_id, p.ref_url, p.low, p.high, p.num_low, p.num_high, p.num
				FROM idx_composite_part_v1 p JOIN idx_composite c ON c.cid = p.cid`,
			`DROP TABLE idx_composite_part_v1`,
		} {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				return fmt.Errorf("migrate schema 1 to 2: %w", err)
			}
		}
	}
	if v >= 2 && v < 6 {
		for _, s := range []string{
			`INSERT INTO idx_composite_part SELECT * FROM idx_composite_part_v5`,
			`DROP TABLE idx_composite_part_v5`,
		} {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				return fmt.Errorf("migrate schema %d to 6: %w", v, err)
			}
		}
	}
	if v >= 1 && v < 4 {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO idx_ref_date (param, ref_id, dparam, high, low, res_pk)
			SELECT r.param, r.ref_id, d.param, d.high, d.low, r.res_pk FROM idx_reference r JOIN idx_date d ON d.res_pk = r.res_pk WHERE r.ref_id != ''`); err != nil {
			return fmt.Errorf("migrate schema %d to 4: %w", v, err)
		}
	}
	switch {
	case v == 0:
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (?)`, schemaVersion); err != nil {
			return fmt.Errorf("record schema version: %w", err)
		}
	case v < schemaVersion:
		if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, schemaVersion); err != nil {
			return fmt.Errorf("record schema version: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit schema: %w", err)
	}
	return nil
}
