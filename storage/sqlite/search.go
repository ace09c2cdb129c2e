package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

// sqlb accumulates SQL text and its bound arguments in the same order.
// Values only ever reach SQLite as arguments, never as SQL text.
type sqlb struct {
	sb   strings.Builder
	args []any
	n    *int // alias counter shared by the builders of one statement
}

func newSQLB(n *int) *sqlb { return &sqlb{n: n} }

func (b *sqlb) w(s string, args ...any) {
	b.sb.WriteString(s)
	b.args = append(b.args, args...)
}

func (b *sqlb) alias(prefix string) string {
	*b.n++
	return prefix + strconv.Itoa(*b.n)
}

func (b *sqlb) String() string { return b.sb.String() }

func unsupported(format string, args ...any) error {
	return fmt.Errorf("sqlite: "+format+": %w", append(args, storage.ErrUnsupported)...)
}

// resource writes a condition that holds for the resources row aliased r.
func (b *sqlb) resource(e storage.Expr, r string) error {
	switch x := e.(type) {
	case storage.And:
		// SQLite materializes every "pk IN (subquery)" of a conjunction in
		// full before intersecting them, so one unselective condition
		// (code=pain score: half the Observations) costs as much as the
		// whole table. One conjunct, the likeliest to be selective, drives
		// the query as an IN list; the other plain matches become EXISTS
		// probes on (res_pk, param), a few index lookups per candidate.
		drive, i := driver(x.Exprs), -1
		return b.list(x.Exprs, " AND ", "1", func(s storage.Expr) error {
			i++
			if m, ok := s.(storage.Match); ok && drive >= 0 && i != drive && m.Kind != storage.KindComposite {
				return b.matchExists(m, r)
			}
			return b.resource(s, r)
		})
	case storage.Or:
		return b.list(x.Exprs, " OR ", "0", func(s storage.Expr) error { return b.resource(s, r) })
	case storage.Not:
		if x.Expr == nil {
			return unsupported("Not without an expression")
		}
		b.w("NOT (")
		if err := b.resource(x.Expr, r); err != nil {
			return err
		}
		b.w(")")
	case storage.Match:
		t, ok := tableOf(x.Kind)
		if !ok {
			return unsupported("match %q: kind %v", x.Param, x.Kind)
		}
		if x.Kind == storage.KindComposite && x.Cond != nil {
			if done, err := b.compositeParts(x, r); done || err != nil {
				return err
			}
		}
		e := b.alias("e")
		b.w(r+".pk IN (SELECT "+e+".res_pk FROM "+t.name+" "+e+" WHERE "+e+".param = ?", x.Param)
		if x.Cond != nil {
			b.w(" AND ")
			if err := b.entry(x.Cond, t, e, x.Kind == storage.KindComposite); err != nil {
				return fmt.Errorf("match %q: %w", x.Param, err)
			}
		}
		b.w(")")
	case storage.IDs:
		if len(x.IDs) == 0 {
			b.w("0")
			return nil
		}
		b.w(r + ".id IN (" + placeholders(len(x.IDs)) + ")")
		for _, id := range x.IDs {
			b.args = append(b.args, id)
		}
	case storage.Chain:
		e, t := b.alias("e"), b.alias("t")
		// CROSS JOIN fixes the order: from the targets that match Where to
		// the references to them on (param, ref_id, ref_type). Left to
		// itself SQLite walked every reference of the parameter instead.
		b.w(r+".pk IN (SELECT "+e+".res_pk FROM resources "+t+" CROSS JOIN idx_reference "+e+
			" ON "+e+".param = ? AND "+e+".ref_id = "+t+".id AND "+e+".ref_type = "+t+".type WHERE "+
			t+".type = ? AND "+t+".deleted = 0", x.Param, x.Target)
		if x.Where != nil {
			b.w(" AND ")
			if err := b.resource(x.Where, t); err != nil {
				return fmt.Errorf("chain %s:%s: %w", x.Param, x.Target, err)
			}
		}
		b.w(")")
	case storage.Has:
		e, s, t := b.alias("e"), b.alias("s"), b.alias("t")
		b.w(r+".pk IN (SELECT "+t+".pk FROM resources "+s+" JOIN idx_reference "+e+" ON "+e+".res_pk = "+s+".pk JOIN resources "+t+
			" ON "+t+".type = "+e+".ref_type AND "+t+".id = "+e+".ref_id WHERE "+
			s+".type = ? AND "+s+".deleted = 0 AND "+e+".param = ?", x.Type, x.Param)
		if x.Where != nil {
			b.w(" AND ")
			if err := b.resource(x.Where, s); err != nil {
				return fmt.Errorf("_has %s:%s: %w", x.Type, x.Param, err)
			}
		}
		b.w(")")
	case nil:
		return unsupported("nil expression")
	default:
		return unsupported("%T is not a resource-level expression", e)
	}
	return nil
}

// matchExists writes a non-composite Match as a probe correlated on the
// resource, for conjuncts that do not drive the query.
func (b *sqlb) matchExists(x storage.Match, r string) error {
	t, ok := tableOf(x.Kind)
	if !ok {
		return unsupported("match %q: kind %v", x.Param, x.Kind)
	}
	e := b.alias("e")
	// The unary + keeps SQLite on the (res_pk, param) index: with a value
	// index on (param, value) usable too it would scan every value in
	// range for each candidate.
	b.w("EXISTS (SELECT 1 FROM "+t.name+" "+e+" WHERE "+e+".res_pk = "+r+".pk AND +"+e+".param = ?", x.Param)
	if x.Cond != nil {
		b.w(" AND ")
		if err := b.entry(x.Cond, t, e, false); err != nil {
			return fmt.Errorf("match %q: %w", x.Param, err)
		}
	}
	b.w(")")
	return nil
}

// driver picks the conjunct that should drive a conjunction: ids, then an
// exact reference, a chain or _has, a code, a string or uri, and last
// ranges. Without statistics SQLite cannot tell them apart; the kind of
// condition is a good proxy for its selectivity in clinical data. -1 when
// no conjunct can drive (only Or and Not).
func driver(es []storage.Expr) int {
	best, bestScore := -1, 100
	for i, e := range es {
		score := 100
		switch x := e.(type) {
		case storage.IDs:
			score = 0
		case storage.Chain, storage.Has:
			score = 3
		case storage.Match:
			switch {
			case x.Cond == nil:
				score = 6
			case x.Kind == storage.KindReference && hasEq(x.Cond, storage.FieldRefID, storage.FieldRefURL):
				score = 1
			case x.Kind == storage.KindToken && hasEq(x.Cond, storage.FieldCode):
				score = 2
			case x.Kind == storage.KindString || x.Kind == storage.KindURI:
				score = 4
			default:
				score = 5
			}
		}
		if score < bestScore {
			best, bestScore = i, score
		}
	}
	return best
}

// idsDriven reports whether a filter is driven by logical ids, which only
// the (type, id) index can find: the + that steers other filters away
// from that index would turn an id lookup into a scan of every resource.
func idsDriven(e storage.Expr) bool {
	switch x := e.(type) {
	case storage.IDs:
		return true
	case storage.And:
		d := driver(x.Exprs)
		if d < 0 {
			return false
		}
		_, ok := x.Exprs[d].(storage.IDs)
		return ok
	}
	return false
}

// hasEq reports whether an entry condition requires equality on one of fields.
func hasEq(e storage.Expr, fields ...storage.Field) bool {
	switch x := e.(type) {
	case storage.Cmp:
		return x.Op == storage.OpEq && slices.Contains(fields, x.Field)
	case storage.And:
		for _, s := range x.Exprs {
			if hasEq(s, fields...) {
				return true
			}
		}
	case storage.Or:
		for _, s := range x.Exprs {
			if !hasEq(s, fields...) {
				return false
			}
		}
		return len(x.Exprs) > 0
	}
	return false
}

// compositeParts writes a composite Match whose condition requires some
// Part (a Part among the top-level conjuncts) as a join of part rows on
// one cid, each constrained by (param, part, its condition), so that SQLite
// can drive the query from whichever part's value index is most selective
// instead of visiting every composite entry of the parameter. It reports
// false, writing nothing, when no Part is required (an Or or Not of
// parts), which the generic EXISTS form handles.
func (b *sqlb) compositeParts(x storage.Match, r string) (bool, error) {
	var conj []storage.Expr
	var flatten func(e storage.Expr)
	flatten = func(e storage.Expr) {
		if a, ok := e.(storage.And); ok {
			for _, s := range a.Exprs {
				flatten(s)
			}
			return
		}
		conj = append(conj, e)
	}
	flatten(x.Cond)
	var order []int                   // part indexes in first-seen order
	conds := map[int][]storage.Expr{} // the conditions on each required part
	var rest []storage.Expr
	for _, c := range conj {
		p, ok := c.(storage.Part)
		if !ok || p.Index < 0 {
			rest = append(rest, c)
			continue
		}
		if _, seen := conds[p.Index]; !seen {
			order = append(order, p.Index)
			conds[p.Index] = nil
		}
		if p.Cond != nil {
			conds[p.Index] = append(conds[p.Index], p.Cond)
		}
	}
	if len(order) == 0 {
		return false, nil
	}
	// Each part index has exactly one row per composite entry, so several
	// conditions on the same index all apply to that one row.
	aliases := make([]string, len(order))
	for i := range order {
		aliases[i] = b.alias("p")
	}
	a0 := aliases[0]
	b.w(r + ".pk IN (SELECT " + a0 + ".res_pk FROM idx_composite_part " + a0)
	for _, a := range aliases[1:] {
		b.w(" JOIN idx_composite_part " + a + " ON " + a + ".cid = " + a0 + ".cid")
	}
	b.w(" WHERE ")
	for i, idx := range order {
		a := aliases[i]
		if i > 0 {
			b.w(" AND ")
		}
		b.w(a+".param = ? AND "+a+".part = ?", x.Param, idx)
		for _, c := range conds[idx] {
			b.w(" AND ")
			if err := b.entry(c, partTable, a, false); err != nil {
				return true, fmt.Errorf("match %q: part %d: %w", x.Param, idx, err)
			}
		}
	}
	// Other conjuncts (Or/Not of parts) refer to the same entry through
	// a0.cid, which the part table carries like idx_composite does.
	for _, c := range rest {
		b.w(" AND ")
		if err := b.entry(c, compositeTable, a0, true); err != nil {
			return true, fmt.Errorf("match %q: %w", x.Param, err)
		}
	}
	b.w(")")
	return true, nil
}

// entry writes a condition on the one index row aliased a of table t.
func (b *sqlb) entry(e storage.Expr, t kindTable, a string, composite bool) error {
	switch x := e.(type) {
	case storage.And:
		return b.list(x.Exprs, " AND ", "1", func(s storage.Expr) error { return b.entry(s, t, a, composite) })
	case storage.Or:
		return b.list(x.Exprs, " OR ", "0", func(s storage.Expr) error { return b.entry(s, t, a, composite) })
	case storage.Not:
		if x.Expr == nil {
			return unsupported("Not without an expression")
		}
		b.w("NOT (")
		if err := b.entry(x.Expr, t, a, composite); err != nil {
			return err
		}
		b.w(")")
	case storage.Cmp:
		if composite {
			return unsupported("Cmp on a composite entry (use Part)")
		}
		col, ok := t.cols[x.Field]
		if !ok {
			return unsupported("field %v is not stored in %s", x.Field, t.name)
		}
		return b.cmp(a+"."+col, x)
	case storage.Part:
		if !composite {
			return unsupported("Part outside a composite")
		}
		if x.Index < 0 {
			return unsupported("Part index %d", x.Index)
		}
		p := b.alias("p")
		b.w("EXISTS (SELECT 1 FROM idx_composite_part "+p+" WHERE "+p+".cid = "+a+".cid AND "+p+".part = ?", x.Index)
		if x.Cond != nil {
			b.w(" AND ")
			if err := b.entry(x.Cond, partTable, p, false); err != nil {
				return fmt.Errorf("part %d: %w", x.Index, err)
			}
		}
		b.w(")")
	case nil:
		return unsupported("nil condition")
	default:
		return unsupported("%T is not an entry-level expression", e)
	}
	return nil
}

func (b *sqlb) list(es []storage.Expr, sep, empty string, f func(storage.Expr) error) error {
	if len(es) == 0 {
		b.w(empty)
		return nil
	}
	b.w("(")
	for i, e := range es {
		if i > 0 {
			b.w(sep)
		}
		if err := f(e); err != nil {
			return err
		}
	}
	b.w(")")
	return nil
}

// fieldType is the Go type of a field's query values: 's', 'i' or 'f'.
func fieldType(f storage.Field) byte {
	switch f {
	case storage.FieldLow, storage.FieldHigh:
		return 'i'
	case storage.FieldNumLow, storage.FieldNumHigh, storage.FieldNum:
		return 'f'
	}
	return 's'
}

var sqlOps = map[storage.Op]string{
	storage.OpEq: "=", storage.OpNe: "<>", storage.OpLt: "<", storage.OpLe: "<=", storage.OpGt: ">", storage.OpGe: ">=",
}

func (b *sqlb) cmp(col string, c storage.Cmp) error {
	var v any
	switch fieldType(c.Field) {
	case 's':
		s, ok := c.Value.(string)
		if !ok {
			return unsupported("%v needs a string value, got %T", c.Field, c.Value)
		}
		v = s
	case 'i':
		switch n := c.Value.(type) {
		case int64:
			v = n
		case int:
			v = int64(n)
		default:
			return unsupported("%v needs an int64 value, got %T", c.Field, c.Value)
		}
	case 'f':
		switch n := c.Value.(type) {
		case float64:
			if math.IsNaN(n) {
				return unsupported("%v compared with NaN", c.Field)
			}
			v = n
		case int64:
			v = float64(n)
		case int:
			v = float64(n)
		default:
			return unsupported("%v needs a float64 value, got %T", c.Field, c.Value)
		}
	}
	if op, ok := sqlOps[c.Op]; ok {
		b.w(col+" "+op+" ?", v)
		return nil
	}
	s, isString := v.(string)
	switch {
	case c.Op == storage.OpPrefix && isString:
		// GLOB is case-sensitive (LIKE is not) and can use the (param, value) index.
		b.w(col+" GLOB ?", globEscape(s)+"*")
	case c.Op == storage.OpContains && isString:
		b.w("instr("+col+", ?) > 0", s)
	default:
		return unsupported("operator %v on %v", c.Op, c.Field)
	}
	return nil
}

// globEscape makes every GLOB metacharacter literal.
func globEscape(s string) string {
	var sb strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[':
			sb.WriteString("[" + string(r) + "]")
		default:
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// sortSource says where the sort key of a kind comes from (key gives the
// key expression over the entry row aliased a) and what type it has.
func sortSource(s storage.Sort) (table string, key func(a string) string, typ byte, err error) {
	col := func(c string) func(string) string { return func(a string) string { return a + "." + c } }
	switch s.Kind {
	case storage.KindDate:
		if s.Desc {
			return "idx_date", col("high"), 'i', nil
		}
		return "idx_date", col("low"), 'i', nil
	case storage.KindNumber:
		return "idx_number", col("num"), 'f', nil
	case storage.KindQuantity:
		return "idx_quantity", col("num"), 'f', nil
	case storage.KindString:
		return "idx_string", col("text"), 's', nil
	case storage.KindToken:
		return "idx_token", col("code"), 's', nil
	case storage.KindURI:
		return "idx_uri", col("exact"), 's', nil
	case storage.KindReference:
		// "Type/id" for a reference to a resource here, else the URL.
		return "idx_reference", func(a string) string {
			return "CASE WHEN " + a + ".ref_type <> '' THEN " + a + ".ref_type || '/' || " + a + ".ref_id ELSE " + a + ".ref_url END"
		}, 's', nil
	}
	return "", nil, 0, unsupported("sort by %q of kind %v", s.Param, s.Kind)
}

// keyCol is one column of the keyset order.
type keyCol struct {
	col      string
	desc     bool
	nullable bool
	val      any // the cursor's value; nil is NULL
}

// keyset writes "the row comes after the cursor" for a lexicographic order
// over cols, with NULLs last in both directions.
func (b *sqlb) keyset(cols []keyCol) {
	b.w("(")
	first := true
	for i, k := range cols {
		if k.val == nil {
			continue // nothing sorts after NULL in this column; ties go on to later columns
		}
		if !first {
			b.w(" OR ")
		}
		first = false
		b.w("(")
		for _, e := range cols[:i] {
			if e.val == nil {
				b.w(e.col + " IS NULL AND ")
			} else {
				b.w(e.col+" = ? AND ", e.val)
			}
		}
		op := ">"
		if k.desc {
			op = "<"
		}
		if k.nullable {
			b.w("("+k.col+" IS NULL OR "+k.col+" "+op+" ?)", k.val)
		} else {
			b.w(k.col+" "+op+" ?", k.val)
		}
		b.w(")")
	}
	if first {
		b.w("0")
	}
	b.w(")")
}

// Walk-in-order plan (default order only). A filter that many resources
// match is cheapest answered by walking the (type, id) index from the
// cursor and checking each resource until a page is full: about
// (count+1)/density rows. The collect plan (IN list from the most
// selective conjunct, sorted afterwards) costs as many rows as that
// conjunct matches, which grows with the data set. Without statistics
// SQLite cannot tell the two apart, so Search decides itself:
//   - a capped count on the driving conjunct's value index (at most
//     walkWindow entries) says whether collecting is cheap anyway;
//   - if not, the walk examines at most walkWindow resources; a page that
//     is not full by then is completed by the collect plan from the last
//     examined resource on.
//
// Either way the wasted work is bounded by walkWindow rows, which is no
// more than what the collect plan costs when it is chosen against.
const minWalkWindow = 1000

// walkWindow is how many driver entries make a filter broad, and how many
// resources the walk examines before it gives up.
func walkWindow(limit int) int { return max(minWalkWindow, 8*limit) }

// walkDriver returns the conjunct whose value index sizes the collect
// plan, when the filter can be walked: a non-composite Match alone or
// driving an And. Ids, chains and _has are selective by nature and stay
// with the collect plan.
func walkDriver(f storage.Expr) (storage.Match, bool) {
	switch x := f.(type) {
	case storage.Match:
		return x, x.Kind != storage.KindComposite
	case storage.And:
		if d := driver(x.Exprs); d >= 0 {
			if m, ok := x.Exprs[d].(storage.Match); ok && m.Kind != storage.KindComposite {
				return m, true
			}
		}
	}
	return storage.Match{}, false
}

// walkFilter writes a filter for per-row checks: every plain Match is an
// EXISTS probe on (res_pk, param), never an IN list that SQLite would
// materialize in full before the first row.
func (b *sqlb) walkFilter(e storage.Expr, r string) error {
	switch x := e.(type) {
	case storage.Match:
		if x.Kind != storage.KindComposite {
			return b.matchExists(x, r)
		}
	case storage.And:
		return b.list(x.Exprs, " AND ", "1", func(s storage.Expr) error { return b.walkFilter(s, r) })
	}
	return b.resource(e, r)
}

// broad reports whether the driving conjunct has at least n index entries.
func broad(ctx context.Context, tx *sql.Tx, m storage.Match, n int) (bool, error) {
	t, ok := tableOf(m.Kind)
	if !ok {
		return false, unsupported("match %q: kind %v", m.Param, m.Kind)
	}
	k := 0
	p := newSQLB(&k)
	p.w("SELECT COUNT(*) FROM (SELECT 1 FROM "+t.name+" e WHERE e.param = ?", m.Param)
	if m.Cond != nil {
		p.w(" AND ")
		if err := p.entry(m.Cond, t, "e", false); err != nil {
			return false, fmt.Errorf("match %q: %w", m.Param, err)
		}
	}
	p.w(" LIMIT ?)", n)
	var c int
	if err := tx.QueryRowContext(ctx, p.String(), p.args...).Scan(&c); err != nil {
		return false, fmt.Errorf("probe %q: %w", m.Param, err)
	}
	return c >= n, nil
}

// walk examines at most window resources of typ (every type when empty)
// after the (type, id) position from, in that order, and returns the
// matches, at most limit. end is the last resource examined, or nil when
// the walk reached the end of the index (the result is then complete).
func walk(ctx context.Context, tx *sql.Tx, typ string, f storage.Expr, from *cursor, window, limit int) (hits []hit, end *cursor, err error) {
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
	recs, err := readVersions(ctx, tx, seqs)
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
func walkSorted(ctx context.Context, tx *sql.Tx, typ string, s storage.Sort, f storage.Expr, from *cursor, window, limit int) (hits []hit, ok bool, err error) {
	col, agg, dir, cmp := "low", "MIN", "ASC", ">="
	if s.Desc {
		col, agg, dir, cmp = "high", "MAX", "DESC", "<="
	}
	var after struct {
		set  bool
		v    int64
		t, i string
	}
	if from != nil {
		v, err := cursorValue(from.K[0], 'i')
		if err != nil {
			return nil, false, err
		}
		if v == nil {
			return nil, false, nil // past every dated resource
		}
		after.set, after.v, after.t, after.i = true, v.(int64), from.T, from.I
	}
	n := 0
	q := newSQLB(&n)
	q.w("SELECT r.type, r.id, r.seq, d." + col + ", CASE WHEN ")
	if err := q.walkFilter(f, "r"); err != nil {
		return nil, false, err
	}
	// The entry must be the resource's key, not one of its other dates.
	q.w(" AND d."+col+" = (SELECT "+agg+"(x."+col+") FROM idx_date x WHERE x.res_pk = r.pk AND +x.param = ?) THEN 1 ELSE 0 END", s.Param)
	// CROSS JOIN keeps the date index outermost, in key order.
	q.w(" FROM idx_date d CROSS JOIN resources r ON r.pk = d.res_pk WHERE d.param = ? AND r.deleted = 0", s.Param)
	if typ != "" {
		q.w(" AND r.type = ?", typ)
	}
	if after.set {
		q.w(" AND d."+col+" "+cmp+" ?", after.v)
	}
	q.w(" ORDER BY d."+col+" "+dir+" LIMIT ?", window)
	rows, err := tx.QueryContext(ctx, q.String(), q.args...)
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
		if after.set && c.key == after.v && (c.t < after.t || c.t == after.t && c.i <= after.i) {
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
	recs, err := readVersions(ctx, tx, seqs)
	if err != nil {
		return nil, false, fmt.Errorf("sorted walk: %w", err)
	}
	for i, r := range recs {
		hits = append(hits, hit{rec: r, keys: []any{cands[i].key}})
	}
	return hits, true, nil
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
func readVersions(ctx context.Context, tx *sql.Tx, seqs []any) ([]storage.Record, error) {
	rows, err := tx.QueryContext(ctx, "SELECT "+recordColumns+" FROM versions v WHERE v.seq IN ("+placeholders(len(seqs))+")", seqs...)
	if err != nil {
		return nil, fmt.Errorf("read matches: %w", err)
	}
	defer rows.Close()
	bySeq := make(map[int64]storage.Record, len(seqs))
	for rows.Next() {
		r, err := scanRecord(rows)
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
		if err := where.resource(q.Filter, "r"); err != nil {
			return storage.Page{}, fmt.Errorf("sqlite: search %v: %w", q.Filter, err)
		}
	}

	// One read transaction: the total, the walk and the collect plan see
	// the same snapshot.
	tx, err := b.r.BeginTx(ctx, nil)
	if err != nil {
		return storage.Page{}, fmt.Errorf("sqlite: search: %w", err)
	}
	defer tx.Rollback()

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

	limit := count + 1
	var hits []hit
	done, plan := false, "collect"
	oneDate := len(q.Sort) == 1 && q.Sort[0].Kind == storage.KindDate
	if m, ok := walkDriver(q.Filter); ok && (len(q.Sort) == 0 || oneDate) && len(q.Types) <= 1 && !idsDriven(q.Filter) {
		window := walkWindow(limit)
		wide, err := broad(ctx, tx, m, window)
		if err != nil {
			return storage.Page{}, fmt.Errorf("sqlite: search %v: %w", q.Filter, err)
		}
		typ := ""
		if len(q.Types) == 1 {
			typ = q.Types[0]
		}
		switch {
		case wide && oneDate:
			hits, done, err = walkSorted(ctx, tx, typ, q.Sort[0], q.Filter, cur, window, limit)
			if err != nil {
				return storage.Page{}, fmt.Errorf("sqlite: search %v: %w", q.Filter, err)
			}
			plan = "sorted walk"
			if !done {
				plan = "sorted walk, then collect" // from the start: the walk's finds are dropped
			}
		case wide:
			var end *cursor
			hits, end, err = walk(ctx, tx, typ, q.Filter, cur, window, limit)
			if err != nil {
				return storage.Page{}, fmt.Errorf("sqlite: search %v: %w", q.Filter, err)
			}
			done, plan = len(hits) == limit || end == nil, "walk"
			if !done {
				plan = "walk+collect"
				cur = end // nothing up to the end of the window is left to find
			}
		}
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
	b.log.DebugContext(ctx, "sqlite search", "plan", plan, "filter", filterText, "results", len(hits))

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

// collect is the general plan: every match of where, with its sort keys,
// ordered, after the cursor position cur (nil: from the start), at most
// limit rows.
func (b *Backend) collect(ctx context.Context, tx *sql.Tx, q storage.Query, where *sqlb, cur *cursor, limit int) ([]hit, error) {
	sel := newSQLB(where.n)
	types := make([]byte, len(q.Sort))
	keys := make([]keyCol, 0, len(q.Sort)+2)
	for i, s := range q.Sort {
		table, key, typ, err := sortSource(s)
		if err != nil {
			return nil, err
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
				return nil, err
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

	rows, err := tx.QueryContext(ctx, outer.String(), outer.args...)
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
		r, err := scanRecord(rows, ptrs...)
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
