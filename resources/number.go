package resources

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

// decimal is a parsed FHIR decimal with the range its written precision
// implies: "1.5" is [1.45, 1.55), "100" is [99.5, 100.5), "1e2" is [50, 150).
type decimal struct {
	v, lo, hi float64
}

func parseDecimal(s string) (decimal, error) {
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant = s[:i]
		e, err := strconv.Atoi(strings.TrimPrefix(s[i+1:], "+"))
		if err != nil || e > 300 || e < -300 {
			return decimal{}, invalid("invalid number %q", s)
		}
		exp = e
	}
	digits := strings.TrimPrefix(strings.TrimPrefix(mant, "-"), "+")
	whole, frac, hasDot := strings.Cut(digits, ".")
	if !allDigits(whole) || (hasDot && !allDigits(frac)) {
		return decimal{}, invalid("invalid number %q", s)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) {
		return decimal{}, invalid("invalid number %q", s)
	}
	half := 0.5 * math.Pow10(exp-len(frac))
	return decimal{v: v, lo: v - half, hi: v + half}, nil
}

// numberText gives the decimal as written: json.Number keeps the source's
// digits, so the precision survives decoding.
func numberText(x any) (string, bool) {
	switch v := x.(type) {
	case json.Number:
		return v.String(), true
	case string:
		return v, true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case int:
		return strconv.Itoa(v), true
	case int64:
		return strconv.FormatInt(v, 10), true
	}
	return "", false
}

// indexNumber extracts a number entry: Num and the precision-derived
// [NumLow, NumHigh] (NumHigh is the exclusive end of the half-unit range).
func indexNumber(p *Param, n node) []storage.Entry {
	s, ok := numberText(n.v)
	if !ok {
		return nil
	}
	d, err := parseDecimal(s)
	if err != nil {
		return nil
	}
	return []storage.Entry{{Param: p.Code, Kind: storage.KindNumber, Num: d.v, NumLow: d.lo, NumHigh: d.hi}}
}

// compileNumber compiles a prefixed decimal into a condition on one entry
// (search.html#number): eq matches values inside the implicit range of the
// search value's precision, ne outside it; gt/lt/ge/le compare with the
// exact value; sa/eb need the entry's own range wholly above/below the
// search range; ap accepts values within 10% of the search value (and at
// least within its precision range).
func compileNumber(v string) (storage.Expr, error) {
	pfx, rest, err := splitPrefix(v)
	if err != nil {
		return nil, err
	}
	d, err := parseDecimal(rest)
	if err != nil {
		return nil, err
	}
	return numberCond(pfx, d), nil
}

func numberCond(pfx prefix, d decimal) storage.Expr {
	num := func(op storage.Op, x float64) storage.Expr {
		return storage.Cmp{Field: storage.FieldNum, Op: op, Value: x}
	}
	switch pfx {
	case pfxNe:
		return storage.Or{Exprs: []storage.Expr{num(storage.OpLt, d.lo), num(storage.OpGe, d.hi)}}
	case pfxGt:
		return num(storage.OpGt, d.v)
	case pfxLt:
		return num(storage.OpLt, d.v)
	case pfxGe:
		return num(storage.OpGe, d.v)
	case pfxLe:
		return num(storage.OpLe, d.v)
	case pfxSa:
		return storage.Cmp{Field: storage.FieldNumLow, Op: storage.OpGe, Value: d.hi}
	case pfxEb:
		return storage.Cmp{Field: storage.FieldNumHigh, Op: storage.OpLe, Value: d.lo}
	case pfxAp:
		w := max(math.Abs(d.v)/10, d.hi-d.v)
		return storage.And{Exprs: []storage.Expr{num(storage.OpGe, d.v-w), num(storage.OpLe, d.v+w)}}
	}
	return storage.And{Exprs: []storage.Expr{num(storage.OpGe, d.lo), num(storage.OpLt, d.hi)}}
}
