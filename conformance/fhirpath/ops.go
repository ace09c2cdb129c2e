package fhirpath

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

type binaryNode struct {
	op          string
	left, right node
}

func newBinary(op string, l, r node) (node, error) {
	switch op {
	case "and", "or", "xor", "implies", "=", "!=", "~", "!~", "<", "<=", ">", ">=", "|", "in", "contains", "+", "-", "*", "/", "div", "mod", "&":
		return &binaryNode{op: op, left: l, right: r}, nil
	}
	return nil, fmt.Errorf("unknown operator %q", op)
}

func (n *binaryNode) eval(c *evalCtx, focus Collection, fr *frame) (Collection, error) {
	l, err := n.left.eval(c, focus, fr)
	if err != nil {
		return nil, err
	}
	// Short-circuits per the three-valued truth tables.
	switch n.op {
	case "and", "or", "implies":
		lv, lk, err := singletonBool(c, l)
		if err != nil {
			return nil, err
		}
		if lk && ((n.op == "and" && !lv) || (n.op == "or" && lv)) {
			return boolColl(n.op == "or"), nil
		}
		if lk && n.op == "implies" && !lv {
			return boolColl(true), nil
		}
	}
	r, err := n.right.eval(c, focus, fr)
	if err != nil {
		return nil, err
	}
	if err := c.tick(len(l) + len(r) + 1); err != nil {
		return nil, err
	}
	switch n.op {
	case "and", "or", "xor", "implies":
		return logic(c, n.op, l, r)
	case "=", "!=":
		res, known, err := collEqual(c, l, r)
		if err != nil || !known {
			return nil, err
		}
		return boolColl(res == (n.op == "=")), nil
	case "~", "!~":
		return boolColl(collEquivalent(c, l, r) == (n.op == "~")), nil
	case "<", "<=", ">", ">=":
		return compareOp(c, n.op, l, r)
	case "|":
		return union(c, l, r), nil
	case "in", "contains":
		item, coll := l, r
		if n.op == "contains" {
			item, coll = r, l
		}
		if len(item) == 0 {
			return nil, nil
		}
		if len(item) > 1 {
			return nil, evalErr("'%s' needs a single item, got %d", n.op, len(item))
		}
		return boolColl(containsNode(c, coll, item[0])), nil
	case "&":
		ls, err := concatOperand(c, l)
		if err != nil {
			return nil, err
		}
		rs, err := concatOperand(c, r)
		if err != nil {
			return nil, err
		}
		return Collection{sysNode(ls+rs, TypeString)}, nil
	}
	return arithmetic(c, n.op, l, r)
}

func concatOperand(c *evalCtx, col Collection) (string, error) {
	if len(col) == 0 {
		return "", nil
	}
	if len(col) > 1 {
		return "", evalErr("'&' needs single items")
	}
	s, ok := sysVal(c, col[0]).(string)
	if !ok {
		return "", evalErr("'&' needs strings")
	}
	return s, nil
}

func logic(c *evalCtx, op string, l, r Collection) (Collection, error) {
	lv, lk, err := singletonBool(c, l)
	if err != nil {
		return nil, err
	}
	rv, rk, err := singletonBool(c, r)
	if err != nil {
		return nil, err
	}
	switch op {
	case "and":
		if (lk && !lv) || (rk && !rv) {
			return boolColl(false), nil
		}
		if lk && rk {
			return boolColl(true), nil
		}
	case "or":
		if (lk && lv) || (rk && rv) {
			return boolColl(true), nil
		}
		if lk && rk {
			return boolColl(false), nil
		}
	case "xor":
		if lk && rk {
			return boolColl(lv != rv), nil
		}
	case "implies":
		if lk && !lv {
			return boolColl(true), nil
		}
		if rk && rv {
			return boolColl(true), nil
		}
		if lk && rk {
			return boolColl(false), nil
		}
	}
	return nil, nil
}

// nodeEqual is FHIRPath '=' on two items; known is false when the
// answer is empty (e.g. dates of different precision).
func nodeEqual(c *evalCtx, a, b Node) (eq, known bool) {
	av, bv := sysVal(c, a), sysVal(c, b)
	switch x := av.(type) {
	case string:
		y, ok := bv.(string)
		return ok && x == y, true
	case bool:
		y, ok := bv.(bool)
		return ok && x == y, true
	case int64, float64:
		fx, _ := toFloat(av)
		fy, ok := toFloat(bv)
		return ok && floatEqual(fx, fy), true
	case Temporal:
		y, ok := bv.(Temporal)
		if !ok || (x.Kind == KindTime) != (y.Kind == KindTime) {
			return false, true
		}
		cmp, ok := compareTemporal(x, y)
		if !ok {
			return false, false
		}
		return cmp == 0, true
	case Quantity:
		y, ok := bv.(Quantity)
		if !ok {
			return false, true
		}
		cmp, ok := compareQuantity(x, y)
		if !ok {
			return false, false
		}
		return cmp == 0, true
	case nil:
		return bv == nil && reflect.DeepEqual(a.ext, b.ext), true
	}
	return jsonEqual(a.value, b.value), true
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case int64:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// jsonEqual compares decoded JSON trees, treating numbers by value.
func jsonEqual(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !jsonEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !jsonEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	if an, ok := parseAnyNumber(a); ok {
		bn, ok := parseAnyNumber(b)
		return ok && floatEqual(an, bn)
	}
	return reflect.DeepEqual(a, b)
}

func parseAnyNumber(v any) (float64, bool) {
	switch x := v.(type) {
	case interface{ Float64() (float64, error) }:
		f, err := x.Float64()
		return f, err == nil
	case int64:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

func collEqual(c *evalCtx, l, r Collection) (eq, known bool, err error) {
	if len(l) == 0 || len(r) == 0 {
		return false, false, nil
	}
	if len(l) != len(r) {
		return false, true, nil
	}
	allKnown := true
	for i := range l {
		eq, known := nodeEqual(c, l[i], r[i])
		if known && !eq {
			return false, true, nil
		}
		if !known {
			allKnown = false
		}
	}
	return allKnown, allKnown, nil
}

// nodeEquivalent is FHIRPath '~': case- and whitespace-insensitive
// strings, decimals at the lower precision, never unknown.
func nodeEquivalent(c *evalCtx, a, b Node) bool {
	av, bv := sysVal(c, a), sysVal(c, b)
	switch x := av.(type) {
	case string:
		y, ok := bv.(string)
		return ok && normSpace(x) == normSpace(y)
	case int64, float64:
		fx, _ := toFloat(av)
		fy, ok := toFloat(bv)
		if !ok {
			return false
		}
		p := min(decimals(fx), decimals(fy))
		return roundTo(fx, p) == roundTo(fy, p)
	case Temporal:
		y, ok := bv.(Temporal)
		if !ok {
			return false
		}
		cmp, ok := compareTemporal(x, y)
		return ok && cmp == 0
	case Quantity:
		y, ok := bv.(Quantity)
		if !ok {
			return false
		}
		vx, ux := normQuantity(x)
		vy, uy := normQuantity(y)
		if ux != uy {
			return false
		}
		p := min(decimals(vx), decimals(vy))
		return roundTo(vx, p) == roundTo(vy, p)
	case nil:
		return bv == nil
	case map[string]any:
		y, ok := bv.(map[string]any)
		return ok && jsonEquivalent(x, y)
	}
	eq, _ := nodeEqual(c, a, b)
	return eq
}

func jsonEquivalent(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok {
			return false
		}
		for k := range x {
			if k == "id" || k == "extension" {
				continue
			}
			if !jsonEquivalent(x[k], y[k]) {
				return false
			}
		}
		for k := range y {
			if _, ok := x[k]; !ok && k != "id" && k != "extension" {
				return false
			}
		}
		return true
	case string:
		y, ok := b.(string)
		return ok && normSpace(x) == normSpace(y)
	}
	return jsonEqual(a, b)
}

func normSpace(s string) string { return strings.ToLower(strings.Join(strings.Fields(s), " ")) }

func decimals(f float64) int {
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if i := strings.IndexByte(s, '.'); i >= 0 {
		return len(s) - i - 1
	}
	return 0
}

func roundTo(f float64, p int) float64 {
	m := math.Pow(10, float64(p))
	return math.Round(f*m) / m
}

func collEquivalent(c *evalCtx, l, r Collection) bool {
	if len(l) != len(r) {
		return false
	}
	used := make([]bool, len(r))
outer:
	for _, a := range l {
		for j, b := range r {
			if !used[j] && nodeEquivalent(c, a, b) {
				used[j] = true
				continue outer
			}
		}
		return false
	}
	return true
}

func compareNodes(c *evalCtx, a, b Node) (int, bool, error) {
	av, bv := sysVal(c, a), sysVal(c, b)
	switch x := av.(type) {
	case string:
		if y, ok := bv.(string); ok {
			return strings.Compare(x, y), true, nil
		}
	case int64, float64:
		fx, _ := toFloat(av)
		if fy, ok := toFloat(bv); ok {
			return compareFloat(fx, fy), true, nil
		}
		if q, ok := bv.(Quantity); ok && q.Unit == "1" {
			return compareFloat(fx, q.Value), true, nil
		}
	case Temporal:
		if y, ok := bv.(Temporal); ok {
			if (x.Kind == KindTime) != (y.Kind == KindTime) {
				break
			}
			cmp, ok := compareTemporal(x, y)
			return cmp, ok, nil
		}
	case Quantity:
		if y, ok := bv.(Quantity); ok {
			cmp, ok := compareQuantity(x, y)
			return cmp, ok, nil
		}
	}
	return 0, false, evalErr("cannot compare %s with %s", typeLabel(a), typeLabel(b))
}

func typeLabel(n Node) string {
	if n.typ != "" {
		return n.typ
	}
	return fmt.Sprintf("%T", n.value)
}

func compareOp(c *evalCtx, op string, l, r Collection) (Collection, error) {
	if len(l) == 0 || len(r) == 0 {
		return nil, nil
	}
	if len(l) > 1 || len(r) > 1 {
		return nil, evalErr("'%s' needs single items", op)
	}
	cmp, known, err := compareNodes(c, l[0], r[0])
	if err != nil || !known {
		return nil, err
	}
	switch op {
	case "<":
		return boolColl(cmp < 0), nil
	case "<=":
		return boolColl(cmp <= 0), nil
	case ">":
		return boolColl(cmp > 0), nil
	}
	return boolColl(cmp >= 0), nil
}

func containsNode(c *evalCtx, coll Collection, it Node) bool {
	for _, x := range coll {
		if eq, _ := nodeEqual(c, x, it); eq {
			return true
		}
	}
	return false
}

// distinctAppend appends items of src not already in dst (by '=').
func distinctAppend(c *evalCtx, dst, src Collection) Collection {
	for _, it := range src {
		if !containsNode(c, dst, it) {
			dst = append(dst, it)
		}
	}
	return dst
}

func union(c *evalCtx, l, r Collection) Collection {
	out := distinctAppend(c, make(Collection, 0, len(l)+len(r)), l)
	return distinctAppend(c, out, r)
}

func arithmetic(c *evalCtx, op string, l, r Collection) (Collection, error) {
	if len(l) == 0 || len(r) == 0 {
		return nil, nil
	}
	if len(l) > 1 || len(r) > 1 {
		return nil, evalErr("'%s' needs single items", op)
	}
	a, b := sysVal(c, l[0]), sysVal(c, r[0])
	switch x := a.(type) {
	case string:
		if y, ok := b.(string); ok && op == "+" {
			return Collection{sysNode(x+y, TypeString)}, nil
		}
	case int64:
		if y, ok := b.(int64); ok {
			switch op {
			case "+":
				return Collection{sysNode(x+y, TypeInteger)}, nil
			case "-":
				return Collection{sysNode(x-y, TypeInteger)}, nil
			case "*":
				return Collection{sysNode(x*y, TypeInteger)}, nil
			case "div":
				if y == 0 {
					return nil, nil
				}
				return Collection{sysNode(x/y, TypeInteger)}, nil
			case "mod":
				if y == 0 {
					return nil, nil
				}
				return Collection{sysNode(x%y, TypeInteger)}, nil
			}
		}
		if _, ok := b.(Quantity); ok && op == "*" {
			return arithmetic(c, op, r, l)
		}
		return floatArith(op, float64(x), b)
	case float64:
		if _, ok := b.(Quantity); ok && op == "*" {
			return arithmetic(c, op, r, l)
		}
		return floatArith(op, x, b)
	case Temporal:
		if q, ok := b.(Quantity); ok && (op == "+" || op == "-") {
			t, err := addDuration(x, q, op == "-")
			if err != nil {
				return nil, err
			}
			return Collection{sysNode(t, l[0].typ)}, nil
		}
	case Quantity:
		switch y := b.(type) {
		case Quantity:
			if op == "+" || op == "-" {
				vx, ux := normQuantity(x)
				vy, uy := normQuantity(y)
				if ux != uy {
					return nil, nil
				}
				if op == "-" {
					vy = -vy
				}
				if x.Unit == y.Unit {
					return Collection{sysNode(Quantity{Value: x.Value + sign(op)*y.Value, Unit: x.Unit}, TypeQuantity)}, nil
				}
				return Collection{sysNode(Quantity{Value: vx + vy, Unit: ux}, TypeQuantity)}, nil
			}
			if (op == "*" || op == "/") && (y.Unit == "1" || x.Unit == y.Unit && op == "/") {
				res := x.Value * y.Value
				unit := x.Unit
				if op == "/" {
					if y.Value == 0 {
						return nil, nil
					}
					res = x.Value / y.Value
					if x.Unit == y.Unit {
						unit = "1"
					}
				}
				return Collection{sysNode(Quantity{Value: res, Unit: unit}, TypeQuantity)}, nil
			}
		case int64, float64:
			f, _ := toFloat(y)
			switch op {
			case "*":
				return Collection{sysNode(Quantity{Value: x.Value * f, Unit: x.Unit}, TypeQuantity)}, nil
			case "/":
				if f == 0 {
					return nil, nil
				}
				return Collection{sysNode(Quantity{Value: x.Value / f, Unit: x.Unit}, TypeQuantity)}, nil
			}
		}
	}
	return nil, evalErr("cannot apply '%s' to %s and %s", op, typeLabel(l[0]), typeLabel(r[0]))
}

func sign(op string) float64 {
	if op == "-" {
		return -1
	}
	return 1
}

func floatArith(op string, x float64, b any) (Collection, error) {
	y, ok := toFloat(b)
	if !ok {
		return nil, evalErr("cannot apply '%s' to a number and %T", op, b)
	}
	var r float64
	switch op {
	case "+":
		r = x + y
	case "-":
		r = x - y
	case "*":
		r = x * y
	case "/":
		if y == 0 {
			return nil, nil
		}
		r = x / y
	case "div":
		if y == 0 {
			return nil, nil
		}
		return Collection{sysNode(int64(math.Trunc(x/y)), TypeInteger)}, nil
	case "mod":
		if y == 0 {
			return nil, nil
		}
		r = math.Mod(x, y)
	default:
		return nil, evalErr("cannot apply '%s' to numbers", op)
	}
	return Collection{sysNode(r, TypeDecimal)}, nil
}

// addDuration adds a calendar or UCUM time quantity to a date/time. A
// quantity finer than the value's precision is truncated to whole units of
// that precision, as the specification requires.
func addDuration(t Temporal, q Quantity, subtract bool) (Temporal, error) {
	unit, ok := calendarUnits[q.Unit]
	if q.Unit == "a" || q.Unit == "mo" {
		// UCUM years and months are fixed lengths, not calendar units:
		// adding them to a date is ambiguous and therefore an error.
		ok = false
	}
	if !ok {
		return t, evalErr("cannot add %s to a date/time", q)
	}
	v := q.Value
	if subtract {
		v = -v
	}
	g := t.goTime()
	whole := int(math.Trunc(v))
	switch unit {
	case "year":
		g = addMonths(g, 12*whole)
	case "month":
		g = addMonths(g, whole)
	case "week":
		g = g.AddDate(0, 0, 7*whole)
	case "day":
		g = g.AddDate(0, 0, whole)
	case "second":
		if t.Kind == KindDate {
			break
		}
		g = g.Add(time.Duration(whole) * time.Second)
	default:
		d := map[string]time.Duration{"hour": time.Hour, "minute": time.Minute, "second": time.Second, "millisecond": time.Millisecond}[unit]
		if t.Kind == KindDate {
			// Convert to whole days at the date's precision.
			days := int(math.Trunc(v * float64(d) / float64(24*time.Hour)))
			g = g.AddDate(0, 0, days)
		} else {
			g = g.Add(time.Duration(v * float64(d)))
		}
	}
	return t.fromGoTime(g), nil
}

// addMonths moves by calendar months, clamping the day to the end of the
// target month (Jan 31 + 1 month = Feb 28/29) as FHIRPath requires, where
// time.AddDate would overflow into the next month.
func addMonths(g time.Time, months int) time.Time {
	y, m, d := g.Date()
	total := int(m) - 1 + months
	ty := y + total/12
	tm := total % 12
	if tm < 0 {
		tm += 12
		ty--
	}
	last := time.Date(ty, time.Month(tm+2), 0, 0, 0, 0, 0, g.Location()).Day()
	return time.Date(ty, time.Month(tm+1), min(d, last), g.Hour(), g.Minute(), g.Second(), g.Nanosecond(), g.Location())
}
