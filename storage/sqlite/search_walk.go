package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

// countEntries counts the index entries of m, up to n: the statistic the
// planner needs, exact where it matters and bounded in cost.
func countEntries(ctx context.Context, tx *sql.Tx, m storage.Match, n int) (int, error) {
	t, ok := tableOf(m.Kind)
	if !ok {
		return 0, unsupported("match %q: kind %v", m.Param, m.Kind)
	}
	k := 0
	p := newSQLB(&k)
	p.w("SELECT COUNT(*) FROM (SELECT 1 FROM "+t.name+" e WHERE e.param = ?", m.Param)
	if m.Cond != nil {
		p.w(" AND ")
		if err := p.entry(m.Cond, t, "e", false); err != nil {
			return 0, fmt.Errorf("match %q: %w", m.Param, err)
		}
	}
	p.w(" LIMIT ?)", n)
	var c int
	if err := tx.QueryRowContext(ctx, p.String(), p.args...).Scan(&c); err != nil {
		return 0, fmt.Errorf("probe %q: %w", m.Param, err)
	}
	return c, nil
}

// walk examines at most window resources of typ (every type when empty)
// after the (type, id) position from, in that order, and returns the
// matches, at most limit. end is the last resource examined, or nil when
// the walk reached the end of the index (the result is then complete).
func walk(ctx context.Context, tx *sql.Tx, cd *codec, typ string, f storage.Expr, from *cursor, window, limit int) (hits []hit, end *cursor, err error) {
	n := 0
	s := newSQLB(&n)
	s.w("SELECT r.type, r.id, r.seq, CASE WHEN ")
	if err := s.walkFilter(f, "r"); err != nil {
		return nil, nil, err
	}
	s.w(" THEN 1 ELSE 0 END FROM resources r WHERE r.deleted = 0")
	if typ != "" {
		s.w(" AND r.type = ?", typ)
	}
	if from != nil {
		s.w(" AND (r.type, r.id) > (?, ?)", from.T, from.I)
	}
	s.w(" ORDER BY r.type, r.id LIMIT ?", window)
	rows, err := tx.QueryContext(ctx, s.String(), s.args...)
	if err != nil {
		return nil, nil, fmt.Errorf("walk: %w", err)
	}
	defer rows.Close()
	var seqs []any
	var last cursor
	seen := 0
	// Rows are produced one by one as SQLite steps the index, so stopping
	// here stops the walk.
	for len(seqs) < limit && rows.Next() {
		var seq int64
		var ok bool
		if err := rows.Scan(&last.T, &last.I, &seq, &ok); err != nil {
			return nil, nil, fmt.Errorf("walk: %w", err)
		}
		seen++
		if ok {
			seqs = append(seqs, seq)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("walk: %w", err)
	}
	if err := rows.Close(); err != nil {
		return nil, nil, fmt.Errorf("walk: %w", err)
	}
	if len(seqs) < limit && seen == window {
		end = &last
	}
	if len(seqs) == 0 {
		return nil, end, nil
	}
	// The versions rows (JSON) are read only for the matches.
	recs, err := readVersions(ctx, tx, cd, seqs)
	if err != nil {
		return nil, nil, fmt.Errorf("walk: %w", err)
	}
	for _, r := range recs {
		hits = append(hits, hit{rec: r})
	}
	return hits, end, nil
}

// walkSorted is the walk for one date sort: it steps the (param, high)
// index downwards (descending) or (param, low) upwards (ascending), so the
// first entry met of each resource carries its sort key (MAX(high) or
// MIN(low)), and checks each resource as it goes. Once limit resources are
// found it reads on through ties of the last key, so that the (type, id)
// tie-break is exact, then orders them. ok is false when the window ran
// out first or the data ran out (resources without the date sort last and
// only the collect plan finds them): the caller then collects.
//
// With ref set it steps instead the resources that refer to ref.id by
// ref.param, in the same order (idx_ref_date): one patient's dates rather
// than every resource's.
func walkSorted(ctx context.Context, tx *sql.Tx, cd *codec, typ string, s storage.Sort, f storage.Expr, from *cursor, window, limit int, ref *refKey) (hits []hit, ok bool, err error) {
	var after *walkAfter
	if from != nil {
		v, err := cursorValue(from.K[0], 'i')
		if err != nil {
			return nil, false, err
		}
		if v == nil {
			return nil, false, nil // past every dated resource
		}
		after = &walkAfter{v: v.(int64), t: from.T, i: from.I}
	}
	query, args, err := sortedWalkSQL(typ, s, f, after, window, ref)
	if err != nil {
		return nil, false, err
	}
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, false, fmt.Errorf("sorted walk: %w", err)
	}
	defer rows.Close()
	type cand struct {
		t, i string
		seq  int64
		key  int64
	}
	var cands []cand
	seen := map[int64]bool{}
	rowsSeen := 0
	for rows.Next() {
		var c cand
		var match bool
		if err := rows.Scan(&c.t, &c.i, &c.seq, &c.key, &match); err != nil {
			return nil, false, fmt.Errorf("sorted walk: %w", err)
		}
		rowsSeen++
		if len(cands) >= limit && c.key != cands[limit-1].key {
			ok = true // every resource keyed at or before the last one is in
			break
		}
		if !match || seen[c.seq] {
			continue
		}
		if after != nil && c.key == after.v && (c.t < after.t || c.t == after.t && c.i <= after.i) {
			continue // on an earlier page
		}
		seen[c.seq] = true
		cands = append(cands, c)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("sorted walk: %w", err)
	}
	if err := rows.Close(); err != nil {
		return nil, false, fmt.Errorf("sorted walk: %w", err)
	}
	if !ok {
		return nil, false, nil
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if a.key != b.key {
			if s.Desc {
				return cmpInt(b.key, a.key)
			}
			return cmpInt(a.key, b.key)
		}
		if a.t != b.t {
			return strings.Compare(a.t, b.t)
		}
		return strings.Compare(a.i, b.i)
	})
	cands = cands[:limit]
	seqs := make([]any, len(cands))
	for i, c := range cands {
		seqs[i] = c.seq
	}
	recs, err := readVersions(ctx, tx, cd, seqs)
	if err != nil {
		return nil, false, fmt.Errorf("sorted walk: %w", err)
	}
	for i, r := range recs {
		hits = append(hits, hit{rec: r, keys: []any{cands[i].key}})
	}
	return hits, true, nil
}

// walkAfter is a sorted walk's cursor: sort key, type and id of the last
// resource of the previous page.
type walkAfter struct {
	v    int64
	t, i string
}

// refKey names the resources a reference walk steps: those whose param
// refers to id (any type; the filter checks the rest).
type refKey struct{ param, id string }

// sortedWalkSQL is the statement of walkSorted (the plan tests read its
// EXPLAIN QUERY PLAN).
func sortedWalkSQL(typ string, s storage.Sort, f storage.Expr, after *walkAfter, window int, ref *refKey) (string, []any, error) {
	col, agg, dir, cmp := "low", "MIN", "ASC", ">="
	if s.Desc {
		col, agg, dir, cmp = "high", "MAX", "DESC", "<="
	}
	n := 0
	q := newSQLB(&n)
	q.w("SELECT r.type, r.id, r.seq, d." + col + ", CASE WHEN ")
	if err := q.walkFilter(f, "r"); err != nil {
		return "", nil, err
	}
	// The entry must be the resource's key, not one of its other dates.
	q.w(" AND d."+col+" = (SELECT "+agg+"(x."+col+") FROM idx_date x WHERE x.res_pk = r.pk AND +x.param = ?) THEN 1 ELSE 0 END", s.Param)
	// CROSS JOIN keeps the date index outermost, in key order.
	if ref != nil {
		q.w(" FROM idx_ref_date d CROSS JOIN resources r ON r.pk = d.res_pk WHERE d.param = ? AND d.ref_id = ? AND d.dparam = ? AND r.deleted = 0",
			ref.param, ref.id, s.Param)
	} else {
		q.w(" FROM idx_date d CROSS JOIN resources r ON r.pk = d.res_pk WHERE d.param = ? AND r.deleted = 0", s.Param)
	}
	if typ != "" {
		q.w(" AND r.type = ?", typ)
	}
	if after != nil {
		q.w(" AND d."+col+" "+cmp+" ?", after.v)
	}
	q.w(" ORDER BY d."+col+" "+dir+" LIMIT ?", window)
	return q.String(), q.args, nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// readVersions reads the versions with the given seqs, in that order.
func readVersions(ctx context.Context, tx *sql.Tx, cd *codec, seqs []any) ([]storage.Record, error) {
	rows, err := tx.QueryContext(ctx, "SELECT "+recordColumns+" FROM versions v WHERE v.seq IN ("+placeholders(len(seqs))+")", seqs...)
	if err != nil {
		return nil, fmt.Errorf("read matches: %w", err)
	}
	defer rows.Close()
	bySeq := make(map[int64]storage.Record, len(seqs))
	for rows.Next() {
		r, err := scanRecord(cd, rows)
		if err != nil {
			return nil, fmt.Errorf("read matches: %w", err)
		}
		bySeq[r.Seq] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read matches: %w", err)
	}
	recs := make([]storage.Record, len(seqs))
	for i, s := range seqs {
		r, ok := bySeq[s.(int64)]
		if !ok {
			return nil, fmt.Errorf("version %d of a current resource is missing", s)
		}
		recs[i] = r
	}
	return recs, nil
}
