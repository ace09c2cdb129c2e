package sqlite

import (
	"fmt"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

// schema5Parts is the composite part table and its indexes as schemas 2
// to 5 created them: NOT NULL columns, full value indexes.
var schema5Parts = []string{
	`CREATE TABLE idx_composite_part (cid INTEGER NOT NULL, part INTEGER NOT NULL, res_pk INTEGER NOT NULL, param TEXT NOT NULL,
		text TEXT NOT NULL, exact TEXT NOT NULL, system TEXT NOT NULL, code TEXT NOT NULL,
		ref_type TEXT NOT NULL, ref_id TEXT NOT NULL, ref_url TEXT NOT NULL,
		low INTEGER NOT NULL, high INTEGER NOT NULL, num_low REAL NOT NULL, num_high REAL NOT NULL, num REAL NOT NULL,
		PRIMARY KEY (cid, part)) STRICT, WITHOUT ROWID`,
	`CREATE INDEX idx_composite_part_res ON idx_composite_part (res_pk)`,
	`CREATE INDEX idx_composite_part_code ON idx_composite_part (param, part, code, system)`,
	`CREATE INDEX idx_composite_part_num ON idx_composite_part (param, part, num)`,
	`CREATE INDEX idx_composite_part_low ON idx_composite_part (param, part, low)`,
	`CREATE INDEX idx_composite_part_text ON idx_composite_part (param, part, text)`,
	`CREATE INDEX idx_composite_part_ref ON idx_composite_part (param, part, ref_id, ref_type)`,
}

func compositeIDs(t *testing.T, b *Backend, code string, min float64) string {
	t.Helper()
	p, err := b.Search(t.Context(), storage.Query{Count: 10, Filter: storage.Match{Param: "ccq", Kind: storage.KindComposite, Cond: storage.And{Exprs: []storage.Expr{
		storage.Part{Index: 0, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: code}},
		storage.Part{Index: 1, Cond: storage.Cmp{Field: storage.FieldNum, Op: storage.OpGt, Value: min}},
	}}}})
	if err != nil {
		t.Fatalf("search %s > %v: %v", code, min, err)
	}
	var got []string
	for _, r := range p.Records {
		got = append(got, r.ID)
	}
	return strings.Join(got, " ")
}

// TestPartRowsNullOutsideKind: a part row keeps its kind's columns and
// NULL in the others (a token part has no number, a quantity part no
// text), and a database of schema 5 (NOT NULL columns, rows with empty
// values) migrates to the nullable table with partial indexes, its rows
// searchable as before and new rows written with NULLs.
func TestPartRowsNullOutsideKind(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir)
	comp := func(code string, v float64) storage.Entry {
		return storage.Entry{Param: "ccq", Kind: storage.KindComposite, Parts: []storage.Entry{
			{Kind: storage.KindToken, System: "urn:s", Code: code, Text: "label"}, {Kind: storage.KindQuantity, Num: v, NumLow: v - 0.5, NumHigh: v + 0.5, Code: "kg"}}}
	}
	put(t, b, "Observation", "o1", 0, comp("a", 1), comp("b", 9))
	put(t, b, "Observation", "o2", 0, comp("a", 9))
	nulls := func(id string) string {
		t.Helper()
		rows, err := b.r.QueryContext(t.Context(), `SELECT part, text IS NULL, exact IS NULL, system IS NULL, code IS NULL, ref_id IS NULL, low IS NULL, num IS NULL
			FROM idx_composite_part WHERE res_pk = (SELECT pk FROM resources WHERE id = ?) ORDER BY cid, part`, id)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var part int
			var n [7]bool
			if err := rows.Scan(&part, &n[0], &n[1], &n[2], &n[3], &n[4], &n[5], &n[6]); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprint(part, n))
		}
		return strings.Join(out, "; ")
	}
	// Token: text, system and code; quantity: system, code and numbers.
	const want = "0 [false true false false true true true]; 1 [true true false false true true false]"
	if got := nulls("o2"); got != want {
		t.Fatalf("NULL columns of o2's parts (text exact system code ref_id low num):\n got  %s\n want %s", got, want)
	}

	// Back to schema 5: the old table with the rows' values made empty, as
	// that code wrote them.
	for _, s := range append([]string{
		`DROP TABLE IF EXISTS p5`,
		`CREATE TABLE p5 AS SELECT cid, part, res_pk, param, COALESCE(text, '') text, COALESCE(exact, '') exact, COALESCE(system, '') system,
			COALESCE(code, '') code, COALESCE(ref_type, '') ref_type, COALESCE(ref_id, '') ref_id, COALESCE(ref_url, '') ref_url,
			COALESCE(low, 0) low, COALESCE(high, 0) high, COALESCE(num_low, 0) num_low, COALESCE(num_high, 0) num_high, COALESCE(num, 0) num FROM idx_composite_part`,
		`DROP TABLE idx_composite_part`,
	}, append(schema5Parts,
		`INSERT INTO idx_composite_part SELECT * FROM p5`,
		`DROP TABLE p5`,
		`UPDATE schema_version SET version = 5`)...) {
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
	var partial int
	if err := b.r.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM pragma_index_list('idx_composite_part') WHERE partial = 1`).Scan(&partial); err != nil || partial != 5 {
		t.Fatalf("partial indexes of idx_composite_part = %d, %v; want 5", partial, err)
	}
	if got := nulls("o2"); got != "0 [false false false false false false false]; 1 [false false false false false false false]" {
		t.Fatalf("migrated rows of o2 changed: %s", got)
	}
	for _, c := range []struct {
		code string
		min  float64
		want string
	}{{"a", 5, "o2"}, {"a", 0, "o1 o2"}, {"b", 5, "o1"}, {"b", 10, ""}} {
		if got := compositeIDs(t, b, c.code, c.min); got != c.want {
			t.Errorf("migrated: %s > %v: got %q, want %q", c.code, c.min, got, c.want)
		}
	}
	put(t, b, "Observation", "o2", 1, comp("b", 20))
	if got := nulls("o2"); got != want {
		t.Fatalf("NULL columns of o2's parts after update:\n got  %s\n want %s", got, want)
	}
	for _, c := range []struct {
		code string
		min  float64
		want string
	}{{"a", 5, ""}, {"b", 5, "o1 o2"}, {"b", 10, "o2"}} {
		if got := compositeIDs(t, b, c.code, c.min); got != c.want {
			t.Errorf("after update: %s > %v: got %q, want %q", c.code, c.min, got, c.want)
		}
	}
}

// TestPartialPartIndexesServeQueries pins that a composite search is still
// driven by the (now partial) value indexes of the parts: a condition on a
// column implies it is not NULL.
func TestPartialPartIndexesServeQueries(t *testing.T) {
	b := openT(t, t.TempDir())
	defer b.Close()
	for i := range 50 {
		put(t, b, "Observation", fmt.Sprint("o", i), 0, storage.Entry{Param: "ccq", Kind: storage.KindComposite, Parts: []storage.Entry{
			{Kind: storage.KindToken, System: "urn:s", Code: fmt.Sprint("c", i%5)}, {Kind: storage.KindQuantity, Num: float64(i)}}})
	}
	for _, c := range []struct {
		name, index string
		cond        storage.Expr
	}{
		{"code", "idx_composite_part_code", storage.Part{Index: 0, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "c1"}}},
		{"num", "idx_composite_part_num", storage.Part{Index: 1, Cond: storage.Cmp{Field: storage.FieldNum, Op: storage.OpGt, Value: 48.0}}},
	} {
		q := storage.Query{Count: 10, Filter: storage.Match{Param: "ccq", Kind: storage.KindComposite, Cond: storage.And{Exprs: []storage.Expr{c.cond}}}}
		plan := explainCollect(t, b, q)
		if !strings.Contains(plan, "USING INDEX "+c.index) && !strings.Contains(plan, "USING COVERING INDEX "+c.index) {
			t.Errorf("%s: plan does not use %s:\n%s", c.name, c.index, plan)
		}
	}
}
