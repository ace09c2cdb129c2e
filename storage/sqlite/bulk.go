package sqlite

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Bulk creates. A Commit of many new resources (the audit journal's
// batches, an import's) spends most of its time in per-statement overhead:
// one write is about fifteen statements (the current version lookup, the
// version, its references, the resource row, one row per index entry),
// each a round through database/sql and the VDBE. Runs of plain creates
// are written instead with multi-row INSERTs, a statement per table per
// chunk of rows, which is several times cheaper per write and stores
// exactly the same rows (TestBulkCreateSameRows compares both paths).
//
// A plain create expects no current version, claims nothing, deletes
// nothing and carries no outbox events. Rows are written in the order of
// the writes, so seqs follow the Commit's order as on the one-by-one path.
// A run that fails (a resource that already exists, the same id twice) is
// rolled back to its savepoint and written again one by one, which
// reports the exact conflict.

// bulkMin is the shortest run of creates worth a multi-row statement.
const bulkMin = 4

// bulkRows bounds the rows of one multi-row statement (under SQLite's
// 32766 bound variables with the widest table's 16 columns, composite
// parts), and so the number of statement texts a transaction prepares.
const bulkRows = 256

func plainCreate(w *storage.Write) bool {
	return w.ExpectVersion == 0 && !w.Deleted && w.Claim == "" && len(w.Events) == 0
}

// applyAll writes the versions of one Commit in order: runs of plain
// creates in bulk, the rest one by one.
func applyAll(ctx context.Context, st *stmts, writes []storage.Write) ([]storage.Record, error) {
	out := make([]storage.Record, len(writes))
	for i := 0; i < len(writes); {
		j := i
		for j < len(writes) && plainCreate(&writes[j]) {
			j++
		}
		if j-i >= bulkMin {
			if err := applyBulk(ctx, st, writes[i:j], out[i:j]); err == nil {
				i = j
				continue
			}
			// Written again one by one below: the error says which write
			// conflicts.
		} else {
			j = i + 1
		}
		for k := i; k < j; k++ {
			rec, err := apply(ctx, st, &writes[k])
			if err != nil {
				return nil, fmt.Errorf("sqlite: commit %s/%s: %w", writes[k].Type, writes[k].ID, err)
			}
			out[k] = rec
		}
		i = j
	}
	return out, nil
}

// applyBulk writes a run of plain creates inside a savepoint of its own;
// on error nothing of the run remains.
func applyBulk(ctx context.Context, st *stmts, ws []storage.Write, out []storage.Record) error {
	if _, err := st.tx.ExecContext(ctx, `SAVEPOINT bulk`); err != nil {
		return fmt.Errorf("bulk savepoint: %w", err)
	}
	err := bulkInsert(ctx, st, ws, out)
	if err != nil {
		if _, rerr := st.tx.ExecContext(ctx, `ROLLBACK TO bulk`); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
	if _, rerr := st.tx.ExecContext(ctx, `RELEASE bulk`); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

func bulkInsert(ctx context.Context, st *stmts, ws []storage.Write, out []storage.Record) error {
	// versions, in write order: seq is the commit order.
	seqs := make([]int64, len(ws))
	rows := make([][]any, len(ws))
	for i := range ws {
		w := &ws[i]
		entries, err := encodeEntries(st.cd, w.Index)
		if err != nil {
			return err
		}
		rows[i] = []any{w.Type, w.ID, w.VersionID, w.LastUpdated.UnixMilli(), false, w.Method, st.cd.encodeJSON(w.JSON), entries}
	}
	if err := insertReturning(ctx, st, "versions (type, id, version, last_updated, deleted, method, json, entries)", "seq", rows, seqs); err != nil {
		return fmt.Errorf("insert versions: %w", err)
	}
	pks := make([]int64, len(ws))
	for i := range ws {
		rows[i] = []any{ws[i].Type, ws[i].ID, ws[i].VersionID, seqs[i], false}
	}
	if err := insertReturning(ctx, st, "resources (type, id, version, seq, deleted)", "pk", rows, pks); err != nil {
		return fmt.Errorf("insert resources: %w", err)
	}

	var refs, composites [][]any
	var compositeOf []*storage.Entry
	byTable := map[string][][]any{}
	for i := range ws {
		w := &ws[i]
		for k := range w.Index {
			e := &w.Index[k]
			if e.Kind == storage.KindReference && e.RefID != "" {
				refs = append(refs, []any{e.Param, e.RefID, e.RefType, seqs[i]})
			}
			if e.Kind == storage.KindComposite {
				composites = append(composites, []any{pks[i], e.Param})
				compositeOf = append(compositeOf, e)
				continue
			}
			t, row := entryRow(pks[i], e)
			byTable[t] = append(byTable[t], row)
		}
	}
	if err := insertRows(ctx, st, "INSERT OR IGNORE INTO version_refs (param, ref_id, ref_type, seq)", refs); err != nil {
		return fmt.Errorf("version references: %w", err)
	}
	for _, t := range entryTables {
		if err := insertRows(ctx, st, "INSERT INTO "+t, byTable[t]); err != nil {
			return fmt.Errorf("index: %w", err)
		}
	}
	var refDates [][]any
	for i := range ws {
		refDates = append(refDates, refDateRows(pks[i], ws[i].Index)...)
	}
	if err := insertRows(ctx, st, insertRefDate, refDates); err != nil {
		return fmt.Errorf("index reference dates: %w", err)
	}
	// Composite entries: their rows first (cid is the part rows' key),
	// then every part, as insertEntry writes them.
	if len(composites) > 0 {
		cids := make([]int64, len(composites))
		if err := insertReturning(ctx, st, "idx_composite (res_pk, param)", "cid", composites, cids); err != nil {
			return fmt.Errorf("index composites: %w", err)
		}
		var parts [][]any
		for k, e := range compositeOf {
			for i := range e.Parts {
				parts = append(parts, append([]any{cids[k], composites[k][0], e.Param, i}, partValues(&e.Parts[i])...))
			}
		}
		if err := insertRows(ctx, st, insertPartHead, parts); err != nil {
			return fmt.Errorf("index composite parts: %w", err)
		}
	}
	for i := range ws {
		out[i] = ws[i].Record
		out[i].Seq = seqs[i]
	}
	return nil
}

// entryTables are the tables (with columns) of non-composite entries, in
// the order bulk writes them; entryRow's first result is one of them.
var entryTables = []string{
	"idx_string (res_pk, param, text, exact)",
	"idx_token (res_pk, param, system, code, text)",
	"idx_reference (res_pk, param, ref_type, ref_id, ref_url, system, code)",
	"idx_date (res_pk, param, low, high)",
	"idx_number (res_pk, param, num_low, num_high, num)",
	"idx_quantity (res_pk, param, num_low, num_high, num, system, code)",
	"idx_uri (res_pk, param, exact)",
}

// entryRow is the table and row of a non-composite entry, the columns of
// insertEntry.
func entryRow(pk int64, e *storage.Entry) (string, []any) {
	switch e.Kind {
	case storage.KindString:
		return entryTables[0], []any{pk, e.Param, e.Text, e.Exact}
	case storage.KindToken:
		return entryTables[1], []any{pk, e.Param, e.System, e.Code, e.Text}
	case storage.KindReference:
		return entryTables[2], []any{pk, e.Param, e.RefType, e.RefID, e.RefURL, e.System, e.Code}
	case storage.KindDate:
		return entryTables[3], []any{pk, e.Param, e.Low, e.High}
	case storage.KindNumber:
		return entryTables[4], []any{pk, e.Param, e.NumLow, e.NumHigh, e.Num}
	case storage.KindQuantity:
		return entryTables[5], []any{pk, e.Param, e.NumLow, e.NumHigh, e.Num, e.System, e.Code}
	}
	// validateIndex admits no other kind; composites are written apart.
	return entryTables[6], []any{pk, e.Param, e.Exact}
}

// valuesSQL is " VALUES (?, ...), (?, ...)" for n rows of width columns.
func valuesSQL(n, width int) string {
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", width), ", ") + ")"
	var b strings.Builder
	b.WriteString(" VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
	}
	return b.String()
}

// insertRows runs head with rows as multi-row VALUES, bulkRows at a time.
func insertRows(ctx context.Context, st *stmts, head string, rows [][]any) error {
	for len(rows) > 0 {
		n := min(len(rows), bulkRows)
		args := make([]any, 0, n*len(rows[0]))
		for _, r := range rows[:n] {
			args = append(args, r...)
		}
		if _, err := st.exec(ctx, head+valuesSQL(n, len(rows[0])), args...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// insertReturning inserts rows into table (with its column list) and sets
// keys[i] to row i's col. The rows of one statement get consecutive keys
// in VALUES order (SQLite's rowid choice for a single writer: the largest
// so far plus one); counting the rows in that range checks it rather than
// assuming it.
func insertReturning(ctx context.Context, st *stmts, table, col string, rows [][]any, keys []int64) error {
	done := 0
	for done < len(rows) {
		n := min(len(rows)-done, bulkRows)
		args := make([]any, 0, n*len(rows[0]))
		for _, r := range rows[done : done+n] {
			args = append(args, r...)
		}
		res, err := st.exec(ctx, "INSERT INTO "+table+valuesSQL(n, len(rows[0])), args...)
		if err != nil {
			return err
		}
		last, err := res.LastInsertId()
		if err != nil {
			return err
		}
		if got, err := res.RowsAffected(); err != nil || got != int64(n) {
			return fmt.Errorf("inserted %d rows of %d (%v)", got, n, err)
		}
		first := last - int64(n) + 1
		// The keys must be exactly first..last: the count of rows in that
		// range written by this statement proves it (the range held none
		// before: last is the largest key, assigned now).
		var c int64
		if err := st.tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+strings.Fields(table)[0]+" WHERE "+col+" BETWEEN ? AND ?", first, last).Scan(&c); err != nil {
			return err
		}
		if c != int64(n) {
			return fmt.Errorf("keys of a multi-row insert are not consecutive (%d in %d..%d)", c, first, last)
		}
		for k := range n {
			keys[done+k] = first + int64(k)
		}
		done += n
	}
	return nil
}

const insertRefDate = "INSERT OR IGNORE INTO idx_ref_date (param, ref_id, dparam, high, low, res_pk)"

// refDateRows are the idx_ref_date rows of a resource's entries: every
// local reference (an id, typed or not) paired with every date.
func refDateRows(pk int64, es []storage.Entry) [][]any {
	var rows [][]any
	for i := range es {
		r := &es[i]
		if r.Kind != storage.KindReference || r.RefID == "" {
			continue
		}
		for k := range es {
			if d := &es[k]; d.Kind == storage.KindDate {
				rows = append(rows, []any{r.Param, r.RefID, d.Param, d.High, d.Low, pk})
			}
		}
	}
	return rows
}
