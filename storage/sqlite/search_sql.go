package sqlite

import (
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
		return b.and(x, r, driver(x.Exprs))
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

// and writes a conjunction driven by its conjunct drive (-1: none).
// SQLite materializes every "pk IN (subquery)" of a conjunction in full
// before intersecting them, so one unselective condition (code=pain
// score: half the Observations) costs as much as the whole table. One
// conjunct, the likeliest to be selective, drives the query as an IN
// list; the other plain matches become EXISTS probes on (res_pk, param),
// a few index lookups per candidate.
func (b *sqlb) and(x storage.And, r string, drive int) error {
	i := -1
	return b.list(x.Exprs, " AND ", "1", func(s storage.Expr) error {
		i++
		if m, ok := s.(storage.Match); ok && drive >= 0 && i != drive && m.Kind != storage.KindComposite {
			return b.matchExists(m, r)
		}
		return b.resource(s, r)
	})
}

// resourceDriven is resource with the driver of a top-level And chosen
// by the caller from measured statistics (drive < 0: by kind).
func (b *sqlb) resourceDriven(e storage.Expr, r string, drive int) error {
	if x, ok := e.(storage.And); ok && drive >= 0 && drive < len(x.Exprs) {
		return b.and(x, r, drive)
	}
	return b.resource(e, r)
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
