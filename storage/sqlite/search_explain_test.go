package sqlite

import (
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Skewed data for the plan tests, shaped like Synthea: one patient with
// thousands of Observations, many with a few; one code common (pain),
// one rare; Patients with names for chains and _has.
const (
	skewHeavyObs = 3600
	skewLight    = 60
	skewLightObs = 8
)

func skewRef(param, id string) storage.Expr {
	return storage.Match{Param: param, Kind: storage.KindReference, Cond: storage.And{Exprs: []storage.Expr{
		storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: "Patient"},
		storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: id}}}}
}

func skewCode(code string) storage.Expr {
	return storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.And{Exprs: []storage.Expr{
		storage.Cmp{Field: storage.FieldSystem, Op: storage.OpEq, Value: "http://loinc.org"},
		storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: code}}}}
}

// loadSkewed writes the data set; the rare code appears 5 times in the
// heavy history and 3 times elsewhere, the pain code in every third
// Observation.
func loadSkewed(t *testing.T, b *Backend) {
	t.Helper()
	var batch []storage.Write
	flush := func() {
		if len(batch) > 0 {
			if _, err := b.Commit(t.Context(), batch...); err != nil {
				t.Fatalf("commit: %v", err)
			}
			batch = batch[:0]
		}
	}
	put := func(typ, id string, entries []storage.Entry) {
		lu := time.UnixMilli(1.7e12 + int64(len(batch))*1000)
		entries = append(entries, storage.Entry{Param: "_lastUpdated", Kind: storage.KindDate, Low: lu.UnixMilli(), High: lu.UnixMilli()})
		batch = append(batch, storage.Write{Record: storage.Record{Type: typ, ID: id, VersionID: 1, LastUpdated: lu, Method: "PUT",
			JSON: fmt.Appendf(nil, `{"resourceType":%q,"id":%q}`, typ, id)}, Index: entries})
		if len(batch) == 500 {
			flush()
		}
	}
	obs := 0
	observation := func(pid string, code string) {
		obs++
		d := int64(obs*7919%100000) * 60000
		put("Observation", fmt.Sprintf("o%06d", obs), []storage.Entry{
			{Param: "patient", Kind: storage.KindReference, RefType: "Patient", RefID: pid},
			{Param: "subject", Kind: storage.KindReference, RefType: "Patient", RefID: pid},
			{Param: "code", Kind: storage.KindToken, System: "http://loinc.org", Code: code},
			{Param: "date", Kind: storage.KindDate, Low: d, High: d + 999},
			{Param: "value-quantity", Kind: storage.KindQuantity, Num: float64(obs % 200), NumLow: float64(obs%200) - .005, NumHigh: float64(obs%200) + .005, System: "http://unitsofmeasure.org", Code: "cm"},
		})
	}
	codeOf := func(i int) string {
		switch {
		case i%3 == 0:
			return "72514-3" // pain
		case i%2 == 0:
			return "8302-2" // height
		}
		return fmt.Sprintf("c%02d", i%40)
	}
	patient := func(n int) string {
		pid := fmt.Sprintf("p%03d", n)
		put("Patient", pid, []storage.Entry{{Param: "name", Kind: storage.KindString, Text: fmt.Sprintf("fam%03d", n), Exact: fmt.Sprintf("Fam%03d", n)}})
		return pid
	}
	heavy := patient(0)
	for i := range skewHeavyObs {
		code := codeOf(i)
		if i%720 == 1 {
			code = "6206-7" // rare
		}
		observation(heavy, code)
	}
	for n := 1; n <= skewLight; n++ {
		pid := patient(n)
		for i := range skewLightObs {
			code := codeOf(i)
			if n%20 == 0 && i == 1 {
				code = "6206-7"
			}
			observation(pid, code)
		}
	}
	flush()
}

// TestExplainQueryPlans pins, on skewed data, which plan each common
// search shape takes (from the backend's log) and, for the collect plan's
// statement, which indexes SQLite uses (EXPLAIN QUERY PLAN): the driving
// conjunct's value index chosen from counted statistics, probes on
// (res_pk, param), no scan of resources or versions.
func TestExplainQueryPlans(t *testing.T) {
	log := &planLog{}
	b, err := Open(t.Context(), t.TempDir(), WithLogger(slog.New(log)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	loadSkewed(t, b)

	obs := []string{"Observation"}
	and := func(es ...storage.Expr) storage.Expr { return storage.And{Exprs: es} }
	tests := []struct {
		name   string
		types  []string
		filter storage.Expr
		sort   []storage.Sort
		plan   string // what the first page of 20 runs
		// want are index uses (substrings of EXPLAIN QUERY PLAN details)
		// of the collect statement, in no particular order.
		want []string
	}{
		{"light patient's pain trend: the patient drives", obs, and(skewRef("patient", "p007"), skewCode("72514-3")), []storage.Sort{dateDesc},
			"collect", []string{"idx_reference_target (param=? AND ref_id=? AND ref_type=?)", "idx_token_res (res_pk=?)", "idx_date_res (res_pk=?)"}},
		{"heavy patient's pain trend: walk of the patient's dates", obs, and(skewRef("patient", "p000"), skewCode("72514-3")), []storage.Sort{dateDesc},
			"ref walk", []string{"idx_reference_target (param=? AND ref_id=? AND ref_type=?)", "idx_token_res (res_pk=?)"}},
		{"heavy patient's rare code: the code drives (counted)", obs, and(skewRef("patient", "p000"), skewCode("6206-7")), nil,
			"collect", []string{"idx_token_code (param=? AND code=? AND system=?)", "idx_reference_res (res_pk=?)"}},
		{"rare code first in the query: still the code", obs, and(skewCode("6206-7"), skewRef("patient", "p000")), nil,
			"collect", []string{"idx_token_code (param=? AND code=? AND system=?)", "idx_reference_res (res_pk=?)"}},
		{"code and value range: the code drives, the range probes", obs,
			and(skewCode("6206-7"), storage.Match{Param: "value-quantity", Kind: storage.KindQuantity, Cond: storage.Cmp{Field: storage.FieldNum, Op: storage.OpGt, Value: 50.0}}), nil,
			"collect", []string{"idx_token_code (param=? AND code=? AND system=?)", "idx_quantity_res (res_pk=?)"}},
		{"_lastUpdated range", obs, storage.Match{Param: "_lastUpdated", Kind: storage.KindDate, Cond: storage.Cmp{Field: storage.FieldLow, Op: storage.OpGt, Value: int64(1.7e12 + 495000)}}, nil,
			"collect", []string{"idx_date_low (param=? AND low>?)"}},
		{"chain subject:Patient.name", obs, storage.Chain{Param: "subject", Target: "Patient",
			Where: storage.Match{Param: "name", Kind: storage.KindString, Cond: storage.Cmp{Field: storage.FieldText, Op: storage.OpEq, Value: "fam007"}}}, nil,
			"collect", []string{"idx_string_text (param=? AND text=?)", "idx_reference_target (param=? AND ref_id=? AND ref_type=?)"}},
		{"_has:Observation:patient:code", []string{"Patient"}, storage.Has{Type: "Observation", Param: "patient", Where: skewCode("6206-7")}, nil,
			"collect", []string{"idx_token_code (param=? AND code=? AND system=?)", "idx_reference_res (res_pk=?"}},
		{"ids", obs, storage.IDs{IDs: []string{"o000001", "o000002"}}, nil,
			"collect", []string{"sqlite_autoindex_resources_1 (type=? AND id=?)"}},
		{"heavy patient's pain trend, oldest first", obs, and(skewRef("patient", "p000"), skewCode("72514-3")), []storage.Sort{{Param: "date", Kind: storage.KindDate}},
			"ref walk", []string{"idx_reference_target (param=? AND ref_id=? AND ref_type=?)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := storage.Query{Types: tc.types, Filter: tc.filter, Sort: tc.sort, Count: 20}
			if _, err := b.Search(t.Context(), q); err != nil {
				t.Fatal(err)
			}
			if got := log.last(); got != tc.plan {
				t.Errorf("plan %q, want %q", got, tc.plan)
			}
			if tc.plan == "ref walk" {
				// The walk itself: a range of idx_ref_date in key order, no
				// sort of its own, the filter probed by (res_pk, param).
				walk := explainWalk(t, b, q)
				// idx_ref_date's primary key is (..., high): newest first;
				// idx_ref_date_low (..., low): oldest first.
				steps := "SEARCH d USING PRIMARY KEY (param=? AND ref_id=? AND dparam=?)"
				if !tc.sort[0].Desc {
					steps = "SEARCH d USING COVERING INDEX idx_ref_date_low (param=? AND ref_id=? AND dparam=?)"
				}
				for _, w := range []string{steps, "idx_token_res (res_pk=?)", "idx_reference_res (res_pk=?)"} {
					if !strings.Contains(walk, w) {
						t.Errorf("walk EXPLAIN QUERY PLAN lacks %q:\n%s", w, walk)
					}
				}
				if strings.Contains(walk, "TEMP B-TREE") || strings.Contains(walk, "SCAN d") {
					t.Errorf("the walk sorts or scans:\n%s", walk)
				}
			}
			details := explainCollect(t, b, q)
			for _, w := range tc.want {
				if !strings.Contains(details, w) {
					t.Errorf("EXPLAIN QUERY PLAN lacks %q:\n%s", w, details)
				}
			}
			for _, line := range strings.Split(details, "\n") {
				// A SCAN of the query's own subquery q or of a list is
				// fine; of a table, never.
				if f := strings.Fields(line); len(f) >= 2 && f[0] == "SCAN" && f[1] != "q" && !strings.HasPrefix(line, "SCAN CONSTANT") {
					t.Errorf("full scan: %q in\n%s", line, details)
				}
			}
		})
	}
}

// explainCollect returns the EXPLAIN QUERY PLAN details of q's collect
// statement, one per line, with the driver Search would measure.
func explainCollect(t *testing.T, b *Backend, q storage.Query) string {
	t.Helper()
	tx, err := b.r.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	drive, _, err := b.measureDriver(t.Context(), tx, q.Filter, walkWindow(q.Count+1))
	if err != nil {
		t.Fatal(err)
	}
	where, err := searchWhere(q, drive)
	if err != nil {
		t.Fatal(err)
	}
	query, args, err := collectSQL(q, where, nil, q.Count+1)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := tx.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		out = append(out, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, "\n")
}

// explainWalk returns the EXPLAIN QUERY PLAN details of the sorted walk
// Search would run for q's first page.
func explainWalk(t *testing.T, b *Backend, q storage.Query) string {
	t.Helper()
	tx, err := b.r.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	limit := q.Count + 1
	drive, n, err := b.measureDriver(t.Context(), tx, q.Filter, walkWindow(limit))
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.plan(t.Context(), tx, q, limit, drive, n)
	if err != nil {
		t.Fatal(err)
	}
	query, args, err := sortedWalkSQL(q.Types[0], q.Sort[0], q.Filter, nil, p.window, p.ref)
	if err != nil {
		t.Fatal(err)
	}
	return explain(t, tx, query, args)
}

func explain(t *testing.T, tx *sql.Tx, query string, args []any) string {
	t.Helper()
	rows, err := tx.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		out = append(out, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, "\n")
}
