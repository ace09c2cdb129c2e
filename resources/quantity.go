package resources

import (
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

const ucumSystem = "http://unitsofmeasure.org"

// canonicalSuffix names the companion parameter that holds a quantity's
// value converted to canonical UCUM units ("value-quantity:canonical").
// The converted entries must not share the parameter's own name: a search
// without a unit compares numbers as written, and 150 mm[Hg] stored also
// as 19998 Pa would otherwise match "gt160".
const canonicalSuffix = ":canonical"

// ucumFactor maps a UCUM unit to a canonical unit of the same dimension and
// the factor to multiply by. Only multiplicative conversions are listed:
// temperatures (Cel, [degF]) are affine and stay as written. The table is
// deliberately small and covers the units of vital signs and common labs:
// mass, length, volume, mass concentration, substance concentration,
// pressure, time and rates. Curly-brace annotations are ignored first, as
// UCUM says ("{beats}/min" is "/min").
var ucumFactor = map[string]struct {
	canon  string
	factor float64
}{
	// mass -> g
	"ug": {"g", 1e-6}, "mg": {"g", 1e-3}, "g": {"g", 1}, "kg": {"g", 1e3},
	"[lb_av]": {"g", 453.59237}, "[oz_av]": {"g", 28.349523125},
	// length -> m
	"mm": {"m", 1e-3}, "cm": {"m", 1e-2}, "m": {"m", 1}, "km": {"m", 1e3},
	"[in_i]": {"m", 0.0254}, "[ft_i]": {"m", 0.3048},
	// volume -> L
	"uL": {"L", 1e-6}, "mL": {"L", 1e-3}, "dL": {"L", 1e-1}, "L": {"L", 1},
	// mass concentration -> g/L
	"g/L": {"g/L", 1}, "mg/L": {"g/L", 1e-3}, "ug/L": {"g/L", 1e-6}, "ng/mL": {"g/L", 1e-6},
	"ug/mL": {"g/L", 1e-3}, "mg/dL": {"g/L", 1e-2}, "g/dL": {"g/L", 10}, "mg/mL": {"g/L", 1},
	// substance concentration -> mmol/L
	"mol/L": {"mmol/L", 1e3}, "mmol/L": {"mmol/L", 1}, "umol/L": {"mmol/L", 1e-3}, "nmol/L": {"mmol/L", 1e-6},
	// pressure -> Pa
	"Pa": {"Pa", 1}, "kPa": {"Pa", 1e3}, "mm[Hg]": {"Pa", 133.322387415}, "cm[H2O]": {"Pa", 98.0665},
	// time -> s
	"ms": {"s", 1e-3}, "s": {"s", 1}, "min": {"s", 60}, "h": {"s", 3600}, "d": {"s", 86400}, "wk": {"s", 604800},
	// rates -> /min
	"/s": {"/min", 60}, "/min": {"/min", 1}, "/h": {"/min", 1.0 / 60},
	// fractions -> %
	"%": {"%", 1},
}

// canonicalUnit returns the canonical unit and factor for a UCUM code.
func canonicalUnit(code string) (string, float64, bool) {
	c := stripAnnotations(code)
	u, ok := ucumFactor[c]
	return u.canon, u.factor, ok
}

func stripAnnotations(code string) string {
	for {
		i := strings.IndexByte(code, '{')
		if i < 0 {
			return code
		}
		j := strings.IndexByte(code[i:], '}')
		if j < 0 {
			return code
		}
		code = code[:i] + code[i+j+1:]
	}
}

// indexQuantity extracts quantity entries. A Quantity gives one entry with
// its system and code (or, without a code, its human unit); when the unit
// text differs from the code, a second entry with the unit and no system
// lets "5.4||mg" match either. A UCUM code listed in ucumFactor adds an
// entry converted to the canonical unit (System = UCUM, Code = canonical)
// under the companion parameter p.Code+canonicalSuffix, which is what a
// search in any convertible unit compiles to; it is added even when the
// code is already canonical, since such searches look only there. A Range gives
// one entry spanning low..high with Num at its middle. Plain numbers (a few
// R4 quantity parameters point at decimals) give unitless entries.
func indexQuantity(p *Param, n node) []storage.Entry {
	m, ok := n.v.(map[string]any)
	if !ok {
		e := indexNumber(p, n)
		for i := range e {
			e[i].Kind = storage.KindQuantity
		}
		return e
	}
	if n.typ == "Range" {
		low, _ := m["low"].(map[string]any)
		high, _ := m["high"].(map[string]any)
		lo, lok := quantityValue(low)
		hi, hok := quantityValue(high)
		if !lok && !hok {
			return nil
		}
		e := storage.Entry{Param: p.Code, Kind: storage.KindQuantity, NumLow: lo.v, NumHigh: hi.v}
		if !lok {
			e.NumLow = -maxFloat
		}
		if !hok {
			e.NumHigh = maxFloat
		}
		e.Num = (e.NumLow + e.NumHigh) / 2
		q := low
		if !lok {
			q = high
		}
		e.System, _ = q["system"].(string)
		e.Code, _ = q["code"].(string)
		return []storage.Entry{e}
	}
	d, ok := quantityValue(m)
	if !ok {
		return nil
	}
	sys, _ := m["system"].(string)
	code, _ := m["code"].(string)
	unit, _ := m["unit"].(string)
	if code == "" {
		code, unit = unit, ""
	}
	base := storage.Entry{Param: p.Code, Kind: storage.KindQuantity, Num: d.v, NumLow: d.lo, NumHigh: d.hi}
	e := base
	e.System, e.Code = sys, code
	out := []storage.Entry{e}
	if unit != "" && unit != code {
		u := base
		u.Code = unit
		out = append(out, u)
	}
	if sys == ucumSystem {
		if canon, f, ok := canonicalUnit(code); ok {
			c := storage.Entry{Param: p.Code + canonicalSuffix, Kind: storage.KindQuantity, System: ucumSystem, Code: canon,
				Num: d.v * f, NumLow: d.lo * f, NumHigh: d.hi * f}
			out = append(out, c)
		}
	}
	return out
}

const maxFloat = 1.7976931348623157e308

func quantityValue(m map[string]any) (decimal, bool) {
	if m == nil {
		return decimal{}, false
	}
	s, ok := numberText(m["value"])
	if !ok {
		return decimal{}, false
	}
	d, err := parseDecimal(s)
	return d, err == nil
}

// compileQuantity compiles "[prefix]number|system|code" (system and code
// optional: "5.4", "5.4||mg", "5.4|http://unitsofmeasure.org|mg"). A UCUM
// unit in the conversion table is converted to its canonical unit and
// canonical reports that the condition applies to the canonical entries
// (parameter p.Code+canonicalSuffix), so 5400 ug finds 5.4 mg. Without a
// unit, or with one the table does not convert, the condition applies to
// the values and units as written.
func compileQuantity(v string) (cond storage.Expr, canonical bool, err error) {
	parts := splitEscaped(v, '|')
	if len(parts) != 1 && len(parts) != 3 {
		return nil, false, invalid("quantity %q must be number or number|system|code", v)
	}
	for i, p := range parts {
		u, err := unescape(p)
		if err != nil {
			return nil, false, err
		}
		parts[i] = u
	}
	pfx, rest, err := splitPrefix(parts[0])
	if err != nil {
		return nil, false, err
	}
	d, err := parseDecimal(rest)
	if err != nil {
		return nil, false, err
	}
	if len(parts) == 1 || (parts[1] == "" && parts[2] == "") {
		return numberCond(pfx, d), false, nil
	}
	sys, code := parts[1], parts[2]
	if code == "" {
		return nil, false, invalid("quantity %q has a system but no code", v)
	}
	if canon, f, ok := canonicalUnit(code); ok && sys == ucumSystem {
		// f > 0 for every table entry, so the order of the bounds holds.
		d = decimal{v: d.v * f, lo: d.lo * f, hi: d.hi * f}
		code = canon
		canonical = true
	}
	conds := []storage.Expr{numberCond(pfx, d), storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: code}}
	if sys != "" {
		conds = append(conds, storage.Cmp{Field: storage.FieldSystem, Op: storage.OpEq, Value: sys})
	}
	return storage.And{Exprs: conds}, canonical, nil
}
