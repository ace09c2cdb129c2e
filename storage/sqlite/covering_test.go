package sqlite

import (
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

// TestCoveringIndexMigration: a schema 6 database (the narrow
// idx_token_code and idx_quantity_res) gains the covering indexes of
// schema 7 at Open, and the value collection of Summarize is then answered
// from them without visiting the index tables' rows.
func TestCoveringIndexMigration(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir)
	val := storage.Entry{Param: "value-quantity", Kind: storage.KindQuantity, Num: 4, NumLow: 4, NumHigh: 4, System: "u", Code: "{score}"}
	put(t, b, "Observation", "o1", 0, storage.Entry{Param: "code", Kind: storage.KindToken, System: "s", Code: "pain"}, val)
	for _, s := range []string{
		`DROP INDEX idx_token_code`,
		`CREATE INDEX idx_token_code ON idx_token (param, code, system)`,
		`DROP INDEX idx_quantity_res`,
		`CREATE INDEX idx_quantity_res ON idx_quantity (res_pk, param)`,
		`UPDATE schema_version SET version = 6`,
	} {
		if _, err := b.w.ExecContext(t.Context(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	b.Close()

	b = openT(t, dir)
	defer b.Close()
	var v int
	if err := b.r.QueryRowContext(t.Context(), `SELECT version FROM schema_version`).Scan(&v); err != nil || v != 7 {
		t.Fatalf("schema version after migration = %d, %v; want 7", v, err)
	}
	columns := func(index string) string {
		rows, err := b.r.QueryContext(t.Context(), `SELECT name FROM pragma_index_info(?) ORDER BY seqno`, index)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			out = append(out, n)
		}
		return strings.Join(out, ",")
	}
	if got := columns("idx_token_code"); got != "param,code,system,res_pk" {
		t.Errorf("idx_token_code columns %s", got)
	}
	if got := columns("idx_quantity_res"); got != "res_pk,param,system,code,num" {
		t.Errorf("idx_quantity_res columns %s", got)
	}
	q := storage.AggregateQuery{Type: "Observation", Value: "value-quantity",
		Where: storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.And{Exprs: []storage.Expr{
			storage.Cmp{Field: storage.FieldSystem, Op: storage.OpEq, Value: "s"},
			storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "pain"}}}}}
	vals, err := aggregateValues(q)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := b.r.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+vals.String()+" SELECT num FROM v", vals.args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	joined := strings.Join(plan, "\n")
	for _, want := range []string{"COVERING INDEX idx_token_code", "COVERING INDEX idx_quantity_res"} {
		if !strings.Contains(joined, want) {
			t.Errorf("plan of the value collection has no %q:\n%s", want, joined)
		}
	}
	got, err := b.Summarize(t.Context(), q)
	if err != nil || len(got) != 1 || got[0].Count != 1 || got[0].Sum != 4 {
		t.Errorf("Summarize after migration: %+v, %v", got, err)
	}
}
