package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/storagetest"
)

func openT(t *testing.T, dir string) *Backend {
	t.Helper()
	b, err := Open(t.Context(), dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return b
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, storagetest.Harness{
		New: func(t *testing.T) storage.Backend { return openT(t, t.TempDir()) },
		Reopen: func(t *testing.T, old storage.Backend) storage.Backend {
			return openT(t, filepath.Dir(old.(*Backend).Path()))
		},
	})
}

func put(t *testing.T, b *Backend, typ, id string, expect int64, idx ...storage.Entry) storage.Record {
	t.Helper()
	recs, err := b.Commit(t.Context(), storage.Write{
		Record: storage.Record{Type: typ, ID: id, VersionID: expect + 1, LastUpdated: time.Now(), Method: "PUT",
			JSON: fmt.Appendf(nil, `{"resourceType":%q,"id":%q}`, typ, id)},
		ExpectVersion: expect,
		Index:         idx,
	})
	if err != nil {
		t.Fatalf("Commit %s/%s: %v", typ, id, err)
	}
	return recs[0]
}

func TestReopenKeepsSchemaAndRefusesNewer(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir)
	put(t, b, "Patient", "p1", 0)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	b = openT(t, dir) // schema creation is idempotent
	if _, err := b.Read(t.Context(), "Patient", "p1"); err != nil {
		t.Fatalf("Read after reopen: %v", err)
	}
	if _, err := b.w.ExecContext(t.Context(), `UPDATE schema_version SET version = ?`, schemaVersion+1); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if b2, err := Open(t.Context(), dir); err == nil {
		b2.Close()
		t.Fatal("Open of a database with a newer schema succeeded")
	}
}

func TestConcurrentWriters(t *testing.T) {
	b := openT(t, t.TempDir())
	defer b.Close()
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	seqs := make(chan int64, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				recs, err := b.Commit(t.Context(), storage.Write{
					Record: storage.Record{Type: "Basic", ID: fmt.Sprintf("w%d-%d", w, i), VersionID: 1, LastUpdated: time.Now(),
						Method: "POST", JSON: []byte(`{}`)},
					Index: []storage.Entry{{Param: "code", Kind: storage.KindToken, Code: fmt.Sprint(w)}},
				})
				if err != nil {
					errs <- err
					return
				}
				seqs <- recs[0].Seq
			}
		})
	}
	// Readers run alongside the writers and must never fail.
	ctx, cancel := context.WithCancel(t.Context())
	var rg sync.WaitGroup
	rg.Go(func() {
		for ctx.Err() == nil {
			if _, err := b.Search(ctx, storage.Query{Filter: storage.Match{Param: "code", Kind: storage.KindToken}, Count: 10, Total: true}); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("concurrent search: %w", err)
				return
			}
		}
	})
	wg.Wait()
	cancel()
	rg.Wait()
	close(errs)
	close(seqs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for s := range seqs {
		if seen[s] {
			t.Fatalf("Seq %d assigned twice", s)
		}
		seen[s] = true
	}
	p, err := b.Search(t.Context(), storage.Query{Types: []string{"Basic"}, Total: true})
	if err != nil || p.Total != writers*each {
		t.Fatalf("Total = %d, %v; want %d", p.Total, err, writers*each)
	}
}

func TestCursorBoundToQuery(t *testing.T) {
	b := openT(t, t.TempDir())
	defer b.Close()
	for i := range 5 {
		put(t, b, "Basic", fmt.Sprint(i), 0, storage.Entry{Param: "date", Kind: storage.KindDate, Low: int64(i), High: int64(i)})
	}
	sorted := storage.Query{Sort: []storage.Sort{{Param: "date", Kind: storage.KindDate}}, Count: 2}
	p, err := b.Search(t.Context(), sorted)
	if err != nil || p.Next == "" {
		t.Fatalf("first page: %v, next %q", err, p.Next)
	}
	h, err := b.History(t.Context(), storage.HistoryRequest{Count: 2})
	if err != nil || h.Next == "" {
		t.Fatalf("history first page: %v, next %q", err, h.Next)
	}
	forged := func(c cursor) string {
		s, err := encodeCursor(c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	str := "x"
	fp := fingerprint("search", "", "nil", fmt.Sprint(sorted.Sort))
	for name, c := range map[string]struct {
		q      storage.Query
		cursor string
	}{
		"unsorted query":   {storage.Query{Count: 2}, p.Next},
		"other filter":     {storage.Query{Sort: sorted.Sort, Count: 2, Filter: storage.IDs{IDs: []string{"1"}}}, p.Next},
		"history cursor":   {sorted, h.Next},
		"wrong value type": {sorted, forged(cursor{Q: fp, K: []cursorVal{{S: &str}}, T: "Basic", I: "1"})},
		"missing key":      {sorted, forged(cursor{Q: fp, T: "Basic", I: "1"})},
		"two values":       {sorted, forged(cursor{Q: fp, K: []cursorVal{{S: &str, Null: true}}, T: "Basic", I: "1"})},
	} {
		if _, err := b.Search(t.Context(), storage.Query{Types: c.q.Types, Filter: c.q.Filter, Sort: c.q.Sort, Count: c.q.Count, Cursor: c.cursor}); !errors.Is(err, storage.ErrBadCursor) {
			t.Errorf("%s: got %v, want ErrBadCursor", name, err)
		}
	}
	if _, err := b.History(t.Context(), storage.HistoryRequest{Type: "Basic", Count: 2, Cursor: h.Next}); !errors.Is(err, storage.ErrBadCursor) {
		t.Errorf("history cursor on another request: got %v", err)
	}
}

func TestValuesAreNeverSQL(t *testing.T) {
	b := openT(t, t.TempDir())
	defer b.Close()
	evil := `x' OR 1=1; DROP TABLE resources; --`
	put(t, b, "Basic", "a", 0, storage.Entry{Param: "name", Kind: storage.KindString, Text: evil, Exact: evil})
	put(t, b, "Basic", "b", 0, storage.Entry{Param: "name", Kind: storage.KindString, Text: "other", Exact: "other"})
	for _, c := range []struct {
		op   storage.Op
		val  string
		want int
	}{
		{storage.OpEq, evil, 1},
		{storage.OpEq, `' OR '1'='1`, 0},
		{storage.OpPrefix, `x'`, 1},
		{storage.OpPrefix, `*`, 0},
		{storage.OpContains, `DROP`, 1},
	} {
		p, err := b.Search(t.Context(), storage.Query{
			Filter: storage.Match{Param: "name", Kind: storage.KindString, Cond: storage.Cmp{Field: storage.FieldText, Op: c.op, Value: c.val}},
			Count:  10,
		})
		if err != nil || len(p.Records) != c.want {
			t.Errorf("%v %q: %d records, %v; want %d", c.op, c.val, len(p.Records), err, c.want)
		}
	}
}

// TestMigrateFromVersion1 rewrites a database into the version 1 layout
// (composite part rows without res_pk and param) and checks that Open
// migrates it and composite searches find the same resources.
func TestMigrateFromVersion1(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir)
	comp := func(code string, v float64) storage.Entry {
		return storage.Entry{Param: "ccq", Kind: storage.KindComposite, Parts: []storage.Entry{
			{Kind: storage.KindToken, Code: code}, {Kind: storage.KindQuantity, Num: v}}}
	}
	put(t, b, "Observation", "o1", 0, comp("a", 1), comp("b", 9))
	put(t, b, "Observation", "o2", 0, comp("a", 9))
	for _, s := range []string{
		`CREATE TABLE old_part (cid INTEGER NOT NULL, idx INTEGER NOT NULL, ` + partColumns + `) STRICT`,
		`INSERT INTO old_part SELECT cid, part, text, exact, system, code, ref_type, ref_id, ref_url, low, high, num_low, num_high, num FROM idx_composite_part`,
		`DROP TABLE idx_composite_part`,
		`ALTER TABLE old_part RENAME TO idx_composite_part`,
		`CREATE INDEX idx_composite_part_cid ON idx_composite_part (cid, idx)`,
		`UPDATE schema_version SET version = 1`,
	} {
		if _, err := b.w.ExecContext(t.Context(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	b.Close()

	b = openT(t, dir)
	defer b.Close()
	var v int
	if err := b.r.QueryRowContext(t.Context(), `SELECT version FROM schema_version`).Scan(&v); err != nil || v != schemaVersion {
		t.Fatalf("schema version after migration = %d, %v; want %d", v, err, schemaVersion)
	}
	for _, c := range []struct {
		code string
		min  float64
		want []string
	}{
		{"a", 5, []string{"o2"}},
		{"a", 0, []string{"o1", "o2"}},
		{"b", 5, []string{"o1"}},
		{"b", 10, nil},
	} {
		p, err := b.Search(t.Context(), storage.Query{Count: 10, Filter: storage.Match{Param: "ccq", Kind: storage.KindComposite, Cond: storage.And{Exprs: []storage.Expr{
			storage.Part{Index: 0, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: c.code}},
			storage.Part{Index: 1, Cond: storage.Cmp{Field: storage.FieldNum, Op: storage.OpGt, Value: c.min}},
		}}}})
		if err != nil {
			t.Fatalf("search %s > %v: %v", c.code, c.min, err)
		}
		var got []string
		for _, r := range p.Records {
			got = append(got, r.ID)
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s > %v: got %v, want %v", c.code, c.min, got, c.want)
		}
	}
	// The migrated rows are replaced like new ones on update.
	put(t, b, "Observation", "o2", 1, comp("b", 20))
	var n int
	if err := b.r.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM idx_composite_part WHERE res_pk = (SELECT pk FROM resources WHERE id = 'o2')`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("part rows of o2 after update = %d, %v; want 2", n, err)
	}
}

func kvRows(t *testing.T, b *Backend) int {
	t.Helper()
	var n int
	if err := b.r.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM kv`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestKVExpiredRecordsAreDeleted(t *testing.T) {
	const ttl = 30 * time.Millisecond
	t.Run("GetDeletesExpired", func(t *testing.T) {
		b, err := Open(t.Context(), t.TempDir(), WithKVSweepInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		kv := b.KV()
		for k, d := range map[string]time.Duration{"short": ttl, "forever": 0, "hour": time.Hour} {
			if err := kv.Put(t.Context(), k, []byte(k), d); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(2 * ttl)
		if n := kvRows(t, b); n != 3 {
			t.Fatalf("%d rows before Get, want 3 (no sweep running)", n)
		}
		if _, err := kv.Get(t.Context(), "short"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Get of expired key: %v, want ErrNotFound", err)
		}
		if n := kvRows(t, b); n != 2 {
			t.Fatalf("%d rows after Get of the expired key, want 2", n)
		}
		for _, k := range []string{"forever", "hour"} {
			if v, err := kv.Get(t.Context(), k); err != nil || string(v) != k {
				t.Fatalf("Get(%s) = %q, %v", k, v, err)
			}
		}
	})
	t.Run("SweepInBatches", func(t *testing.T) {
		b, err := Open(t.Context(), t.TempDir(), WithKVSweepInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		const expired = 3*sweepBatch + 7
		if _, err := b.w.ExecContext(t.Context(), `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
			INSERT INTO kv (key, value, expires_at) SELECT 'old/' || i, x'00', 1 FROM n`, expired); err != nil {
			t.Fatal(err)
		}
		if err := b.KV().Put(t.Context(), "live", []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
		n, err := b.SweepExpiredKV(t.Context())
		if err != nil || n != expired {
			t.Fatalf("SweepExpiredKV = %d, %v; want %d", n, err, expired)
		}
		if rows := kvRows(t, b); rows != 1 {
			t.Fatalf("%d rows after sweep, want 1", rows)
		}
		if n, err := b.SweepExpiredKV(t.Context()); err != nil || n != 0 {
			t.Fatalf("second sweep = %d, %v; want 0", n, err)
		}
	})
	t.Run("PeriodicSweep", func(t *testing.T) {
		b, err := Open(t.Context(), t.TempDir(), WithKVSweepInterval(20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"a", "b", "c"} {
			if err := b.KV().Put(t.Context(), k, []byte("v"), ttl); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.KV().Put(t.Context(), "live", []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for kvRows(t, b) != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("expired records still stored after 5s: %d rows", kvRows(t, b))
			}
			time.Sleep(10 * time.Millisecond)
		}
		// Close waits for the sweeper to stop before closing the pools.
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestGroupCommitIsolatesFailures holds the writer connection so that
// concurrent Commits pile up into groups, and checks that a failed
// compare-and-set or claim in a group affects only its own Commit.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	b, err := Open(t.Context(), t.TempDir(), WithGroupCommit(64))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	write := func(id string, expect int64, claim, body string) storage.Write {
		return storage.Write{
			Record:        storage.Record{Type: "Basic", ID: id, VersionID: expect + 1, LastUpdated: time.Now(), Method: "PUT", JSON: []byte(body)},
			ExpectVersion: expect, Claim: claim,
			Index: []storage.Entry{{Param: "code", Kind: storage.KindToken, Code: body}},
		}
	}
	put(t, b, "Basic", "existing", 0)
	before := b.groups.Load()

	conn, err := b.w.Conn(t.Context()) // the only writer connection
	if err != nil {
		t.Fatal(err)
	}
	type call struct {
		name   string
		writes []storage.Write
		want   error // nil, ErrVersionConflict or ErrDuplicateClaim
	}
	var calls []call
	for i := range 10 {
		calls = append(calls, call{fmt.Sprintf("new-%d", i), []storage.Write{write(fmt.Sprintf("n%d", i), 0, "", fmt.Sprint(i))}, nil})
	}
	calls = append(calls,
		call{"stale", []storage.Write{write("existing", 0, "", "stale")}, storage.ErrVersionConflict},
		call{"claim-a", []storage.Write{write("c1", 0, "same-claim", "ca")}, nil},
		// A multi-write Commit whose second write fails leaves nothing.
		call{"partial", []storage.Write{write("p1", 0, "", "p1"), write("existing", 5, "", "p2")}, storage.ErrVersionConflict},
	)
	results := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Go(func() { _, results[i] = b.Commit(t.Context(), c.writes...) })
	}
	time.Sleep(100 * time.Millisecond) // let every Commit reach the writer
	conn.Close()
	wg.Wait()
	// The claim is taken by c1 (same group or earlier); a second holder must fail.
	if _, err := b.Commit(t.Context(), write("c2", 0, "same-claim", "cb")); !errors.Is(err, storage.ErrDuplicateClaim) {
		t.Errorf("second claim: %v, want ErrDuplicateClaim", err)
	}
	for i, c := range calls {
		if c.want == nil && results[i] != nil || c.want != nil && !errors.Is(results[i], c.want) {
			t.Errorf("%s: got %v, want %v", c.name, results[i], c.want)
		}
	}
	if n := b.groups.Load() - before; n >= int64(len(calls)) {
		t.Errorf("%d transactions for %d concurrent Commits: nothing was grouped", n, len(calls))
	}
	p, err := b.Search(t.Context(), storage.Query{Types: []string{"Basic"}, Count: 100, Total: true})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range p.Records {
		ids = append(ids, r.ID)
	}
	want := "[c1 existing n0 n1 n2 n3 n4 n5 n6 n7 n8 n9]"
	if fmt.Sprint(ids) != want {
		t.Errorf("stored %v, want %s", ids, want)
	}
	if r, err := b.Read(t.Context(), "Basic", "existing"); err != nil || r.VersionID != 1 {
		t.Errorf("existing = v%d, %v; want untouched v1", r.VersionID, err)
	}
}
