package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

// hit is one result row: the record and its sort key values.
type hit struct {
	rec  storage.Record
	keys []any
}

// Search implements storage.Backend.
func (b *Backend) Search(ctx context.Context, q storage.Query) (storage.Page, error) {
	if q.Count < 0 {
		return storage.Page{}, fmt.Errorf("sqlite: search: negative count %d", q.Count)
	}
	count := min(q.Count, maxCount)
	filterText := "nil"
	if q.Filter != nil {
		filterText = q.Filter.String()
	}
	fp := fingerprint("search", strings.Join(q.Types, "\x01"), filterText, fmt.Sprint(q.Sort))
	var cur *cursor
	if q.Cursor != "" {
		c, err := decodeCursor(q.Cursor, fp)
		if err != nil {
			return storage.Page{}, err
		}
		if len(c.K) != len(q.Sort) || c.T == "" || c.I == "" {
			return storage.Page{}, fmt.Errorf("sqlite: search cursor shape: %w", storage.ErrBadCursor)
		}
		cur = &c
	}

	// One read transaction: the statistics, the total, the walk and the
	// collect plan see the same snapshot.
	tx, err := b.r.BeginTx(ctx, nil)
	if err != nil {
		return storage.Page{}, fmt.Errorf("sqlite: search: %w", err)
	}
	defer tx.Rollback()

	limit := count + 1
	drive, driveEntries, err := b.measureDriver(ctx, tx, q.Filter, walkWindow(limit))
	if err != nil {
		return storage.Page{}, fmt.Errorf("sqlite: search %v: %w", q.Filter, err)
	}
	where, err := searchWhere(q, drive)
	if err != nil {
		return storage.Page{}, err
	}

	page := storage.Page{Total: -1}
	if q.Total {
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM resources r WHERE "+where.String(), where.args...).Scan(&page.Total); err != nil {
			return storage.Page{}, fmt.Errorf("sqlite: search total: %w", err)
		}
	}
	if count == 0 {
		if err := ctx.Err(); err != nil {
			return storage.Page{}, fmt.Errorf("sqlite: search: %w", err)
		}
		return page, nil
	}

	plan, err := b.plan(ctx, tx, q, limit, drive, driveEntries)
	if err != nil {
		return storage.Page{}, fmt.Errorf("sqlite: search %v: %w", q.Filter, err)
	}
	typ := ""
	if len(q.Types) == 1 {
		typ = q.Types[0]
	}
	var hits []hit
	done := false
	switch plan.kind {
	case planSortedWalk, planRefWalk:
		// Short of a page the walk's finds are dropped and the collect
		// plan starts over.
		hits, done, err = walkSorted(ctx, tx, b.cd, typ, q.Sort[0], q.Filter, cur, plan.window, limit, plan.ref)
		if err != nil {
			return storage.Page{}, fmt.Errorf("sqlite: search %v: %w", q.Filter, err)
		}
	case planWalk:
		var end *cursor
		hits, end, err = walk(ctx, tx, b.cd, typ, q.Filter, cur, plan.window, limit)
		if err != nil {
			return storage.Page{}, fmt.Errorf("sqlite: search %v: %w", q.Filter, err)
		}
		done = len(hits) == limit || end == nil
		if !done {
			cur = end // nothing up to the end of the window is left to find
		}
	}
	// The label names what ran, as the plan tests read it from the log.
	label := plan.kind.String()
	switch {
	case !done && plan.kind == planWalk:
		label = "walk+collect"
	case !done && (plan.kind == planSortedWalk || plan.kind == planRefWalk):
		label = plan.kind.String() + ", then collect" // from the start: the walk's finds are dropped
	}
	if !done {
		more, err := b.collect(ctx, tx, q, where, cur, limit-len(hits))
		if err != nil {
			return storage.Page{}, err
		}
		hits = append(hits, more...)
	}
	if err := tx.Commit(); err != nil {
		return storage.Page{}, fmt.Errorf("sqlite: search: %w", err)
	}
	b.log.DebugContext(ctx, "sqlite search", "plan", label, "filter", filterText, "results", len(hits))

	if len(hits) > count {
		// One row past the page: there is a next page.
		last := hits[count-1]
		c := cursor{Q: fp, T: last.rec.Type, I: last.rec.ID}
		for _, v := range last.keys {
			cv, err := toCursorVal(v)
			if err != nil {
				return storage.Page{}, err
			}
			c.K = append(c.K, cv)
		}
		if page.Next, err = encodeCursor(c); err != nil {
			return storage.Page{}, err
		}
		hits = hits[:count]
	}
	page.Records = make([]storage.Record, len(hits))
	for i, h := range hits {
		page.Records[i] = h.rec
	}
	return page, nil
}

// searchWhere is the condition on the resources row r of a search, the
// top-level And driven by its conjunct drive (-1: chosen by kind).
func searchWhere(q storage.Query, drive int) (*sqlb, error) {
	n := 0
	where := newSQLB(&n)
	where.w("r.deleted = 0")
	if len(q.Types) > 0 {
		// With a filter, the unary + leaves the (type, id) index alone so
		// that SQLite drives the query from the filter's value index
		// instead of scanning every resource of the type.
		plus := ""
		if q.Filter != nil && !idsDriven(q.Filter) {
			plus = "+"
		}
		where.w(" AND " + plus + "r.type IN (" + placeholders(len(q.Types)) + ")")
		for _, t := range q.Types {
			where.args = append(where.args, t)
		}
	}
	if q.Filter != nil {
		where.w(" AND ")
		if err := where.resourceDriven(q.Filter, "r", drive); err != nil {
			return nil, fmt.Errorf("sqlite: search %v: %w", q.Filter, err)
		}
	}
	return where, nil
}

// measureDriver chooses the driver of a top-level And from the data when
// several conjuncts are equality lookups (eqCandidates): each one's index
// entries are counted, the kind-order driver first and the others capped
// at the smallest count so far, so the measuring costs at most a few
// times the entries of the cheapest driver (and never more than cap rows
// each). It returns the chosen conjunct and its count (capped at cap), or
// -1, -1 when the kind order decides alone.
func (b *Backend) measureDriver(ctx context.Context, tx *sql.Tx, f storage.Expr, cap int) (int, int, error) {
	x, ok := f.(storage.And)
	if !ok || idsDriven(f) {
		return -1, -1, nil
	}
	cands := eqCandidates(x.Exprs)
	fallback := driver(x.Exprs)
	if len(cands) < 2 || !slices.Contains(cands, fallback) {
		return -1, -1, nil
	}
	// The kind-order driver first: its count caps the others'.
	order := append([]int{slices.Index(cands, fallback)}, slices.DeleteFunc(seq(len(cands)), func(i int) bool { return cands[i] == fallback })...)
	counts := make([]int, len(cands))
	limit := cap
	for _, i := range order {
		n, err := countEntries(ctx, tx, x.Exprs[cands[i]].(storage.Match), limit)
		if err != nil {
			return -1, -1, err
		}
		counts[i] = n
		limit = min(limit, n)
	}
	d := pickDriver(fallback, cands, counts)
	return d, counts[slices.Index(cands, d)], nil
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// plan gathers the statistics the query's shape needs and chooses its
// plan. A driver measured by measureDriver (drive >= 0) comes with its
// count, which is the statistic; otherwise the kind-order driver is
// counted here.
func (b *Backend) plan(ctx context.Context, tx *sql.Tx, q storage.Query, limit, drive, driveEntries int) (searchPlan, error) {
	s := shapeOf(q, limit)
	st := planStats{driverEntries: -1}
	if s.needsStats() {
		m, _ := walkDriver(q.Filter)
		if drive >= 0 {
			m = q.Filter.(storage.And).Exprs[drive].(storage.Match) // measureDriver chose among Matches
			st.driverEntries = driveEntries
		} else {
			n, err := countEntries(ctx, tx, m, walkWindow(limit))
			if err != nil {
				return searchPlan{}, err
			}
			st.driverEntries = n
		}
		st.ref = refOf(m)
	}
	return choosePlan(s, st), nil
}

// collect is the general plan: every match of where, with its sort keys,
// ordered, after the cursor position cur (nil: from the start), at most
// limit rows.
func (b *Backend) collect(ctx context.Context, tx *sql.Tx, q storage.Query, where *sqlb, cur *cursor, limit int) ([]hit, error) {
	query, args, err := collectSQL(q, where, cur, limit)
	if err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: search: %w", err)
	}
	defer rows.Close()
	var hits []hit
	for rows.Next() {
		vals := make([]any, len(q.Sort))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		r, err := scanRecord(b.cd, rows, ptrs...)
		if err != nil {
			return nil, fmt.Errorf("sqlite: search: %w", err)
		}
		hits = append(hits, hit{rec: r, keys: vals})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: search: %w", err)
	}
	return hits, nil
}

// collectSQL is the statement of the collect plan (the plan tests read
// its EXPLAIN QUERY PLAN).
func collectSQL(q storage.Query, where *sqlb, cur *cursor, limit int) (string, []any, error) {
	sel := newSQLB(where.n)
	types := make([]byte, len(q.Sort))
	keys := make([]keyCol, 0, len(q.Sort)+2)
	for i, s := range q.Sort {
		table, key, typ, err := sortSource(s)
		if err != nil {
			return "", nil, err
		}
		agg := "MIN"
		if s.Desc {
			agg = "MAX"
		}
		x := sel.alias("x")
		// The unary + keeps SQLite from walking the (param, value) index for
		// MIN/MAX over every row of the parameter; (res_pk, param) finds the
		// few entries of this resource.
		sel.w(fmt.Sprintf(", (SELECT %s(%s) FROM %s %s WHERE %s.res_pk = r.pk AND +%s.param = ?) AS s%d", agg, key(x), table, x, x, x, i), s.Param)
		types[i] = typ
		keys = append(keys, keyCol{col: "q.s" + strconv.Itoa(i), desc: s.Desc, nullable: true})
	}
	keys = append(keys, keyCol{col: "q.type"}, keyCol{col: "q.id"})

	outer := newSQLB(where.n)
	outer.w("SELECT " + recordColumns)
	for i := range q.Sort {
		outer.w(", q.s" + strconv.Itoa(i))
	}
	outer.w(" FROM (SELECT r.pk AS pk, r.type AS type, r.id AS id, r.seq AS seq" + sel.String() + " FROM resources r WHERE " + where.String() + ") q")
	outer.args = append(append(outer.args, sel.args...), where.args...)
	outer.w(" JOIN versions v ON v.seq = q.seq")
	if cur != nil {
		for i, v := range cur.K {
			val, err := cursorValue(v, types[i])
			if err != nil {
				return "", nil, err
			}
			keys[i].val = val
		}
		keys[len(keys)-2].val, keys[len(keys)-1].val = cur.T, cur.I
		outer.w(" WHERE ")
		outer.keyset(keys)
	}
	outer.w(" ORDER BY ")
	for i, s := range q.Sort {
		dir := ""
		if s.Desc {
			dir = " DESC"
		}
		fmt.Fprintf(&outer.sb, "(q.s%d IS NULL), q.s%d%s, ", i, i, dir)
	}
	outer.w("q.type, q.id LIMIT ?", limit)
	return outer.String(), outer.args, nil
}

func toCursorVal(v any) (cursorVal, error) {
	switch x := v.(type) {
	case nil:
		return cursorVal{Null: true}, nil
	case int64:
		return cursorVal{I: &x}, nil
	case float64:
		return cursorVal{F: &x}, nil
	case string:
		return cursorVal{S: &x}, nil
	case []byte:
		s := string(x)
		return cursorVal{S: &s}, nil
	}
	return cursorVal{}, fmt.Errorf("sqlite: sort value of type %T", v)
}

// cursorValue checks a decoded sort value against the key's type.
func cursorValue(v cursorVal, typ byte) (any, error) {
	set := 0
	for _, ok := range []bool{v.Null, v.I != nil, v.F != nil, v.S != nil} {
		if ok {
			set++
		}
	}
	bad := errors.New("sort value of the wrong type")
	switch {
	case set != 1:
		bad = errors.New("malformed sort value")
	case v.Null:
		return nil, nil
	case typ == 's' && v.S != nil:
		return *v.S, nil
	case typ == 'i' && v.I != nil:
		return *v.I, nil
	case typ == 'f' && v.F != nil:
		return *v.F, nil
	case typ == 'f' && v.I != nil:
		return float64(*v.I), nil
	}
	return nil, fmt.Errorf("sqlite: search cursor: %v: %w", bad, storage.ErrBadCursor)
}
