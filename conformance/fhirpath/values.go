package fhirpath

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// System type names, as returned by Node.Type for values that FHIRPath
// computes (literals, arithmetic, conversions) rather than reads from a
// resource.
const (
	TypeString   = "System.String"
	TypeBoolean  = "System.Boolean"
	TypeInteger  = "System.Integer"
	TypeDecimal  = "System.Decimal"
	TypeDate     = "System.Date"
	TypeDateTime = "System.DateTime"
	TypeTime     = "System.Time"
	TypeQuantity = "System.Quantity"
)

// TemporalKind says which of the three FHIRPath temporal types a Temporal is.
type TemporalKind uint8

// The temporal kinds.
const (
	KindDate TemporalKind = iota + 1
	KindDateTime
	KindTime
)

// Precision of a Temporal: how many components were given.
type Precision uint8

// Precisions, coarsest first.
const (
	PrecYear Precision = iota + 1
	PrecMonth
	PrecDay
	PrecHour
	PrecMinute
	PrecSecond
	PrecMillisecond
)

// Temporal is a FHIRPath Date, DateTime or Time with partial precision.
// Components beyond Prec are zero. TZ is the offset in minutes when HasTZ.
type Temporal struct {
	Kind   TemporalKind
	Prec   Precision
	Year   int
	Month  int
	Day    int
	Hour   int
	Minute int
	Second int
	Milli  int
	HasTZ  bool
	TZ     int
	// fracDigits keeps how many fraction digits were written so that
	// formatting round-trips (e.g. ".000").
	fracDigits int
}

// Quantity is a FHIRPath System.Quantity: a decimal value and a UCUM unit
// (or a calendar duration keyword such as "year").
type Quantity struct {
	Value float64
	Unit  string
}

// ParseTemporal parses the text of a FHIR date, dateTime, instant or time
// (without the FHIRPath '@' prefix). kind selects which grammar applies.
func ParseTemporal(s string, kind TemporalKind) (Temporal, error) {
	t := Temporal{Kind: kind}
	rest := s
	num := func(n int, what string) (int, error) {
		if len(rest) < n {
			return 0, fmt.Errorf("fhirpath: bad %s in %q", what, s)
		}
		v := 0
		for i := 0; i < n; i++ {
			c := rest[i]
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("fhirpath: bad %s in %q", what, s)
			}
			v = v*10 + int(c-'0')
		}
		rest = rest[n:]
		return v, nil
	}
	var err error
	if kind != KindTime {
		if t.Year, err = num(4, "year"); err != nil {
			return t, err
		}
		t.Prec = PrecYear
		if strings.HasPrefix(rest, "-") {
			rest = rest[1:]
			if t.Month, err = num(2, "month"); err != nil {
				return t, err
			}
			t.Prec = PrecMonth
			if strings.HasPrefix(rest, "-") {
				rest = rest[1:]
				if t.Day, err = num(2, "day"); err != nil {
					return t, err
				}
				t.Prec = PrecDay
			}
		}
		if t.Month > 12 || (t.Prec >= PrecMonth && t.Month < 1) || t.Day > 31 || (t.Prec >= PrecDay && t.Day < 1) {
			return t, fmt.Errorf("fhirpath: invalid date %q", s)
		}
		if rest == "" {
			return t, nil
		}
		if kind == KindDate {
			return t, fmt.Errorf("fhirpath: trailing text in date %q", s)
		}
		if rest[0] != 'T' {
			return t, fmt.Errorf("fhirpath: bad dateTime %q", s)
		}
		rest = rest[1:]
		if rest == "" {
			return t, nil
		}
	}
	if t.Hour, err = num(2, "hour"); err != nil {
		return t, err
	}
	t.Prec = PrecHour
	if strings.HasPrefix(rest, ":") {
		rest = rest[1:]
		if t.Minute, err = num(2, "minute"); err != nil {
			return t, err
		}
		t.Prec = PrecMinute
		if strings.HasPrefix(rest, ":") {
			rest = rest[1:]
			if t.Second, err = num(2, "second"); err != nil {
				return t, err
			}
			t.Prec = PrecSecond
			if strings.HasPrefix(rest, ".") {
				rest = rest[1:]
				n := 0
				for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
					n++
				}
				if n == 0 {
					return t, fmt.Errorf("fhirpath: bad fraction in %q", s)
				}
				frac := rest[:n]
				rest = rest[n:]
				t.fracDigits = n
				for len(frac) < 3 {
					frac += "0"
				}
				t.Milli, _ = strconv.Atoi(frac[:3])
				t.Prec = PrecMillisecond
			}
		}
	}
	if t.Hour > 23 || t.Minute > 59 || t.Second > 60 {
		return t, fmt.Errorf("fhirpath: invalid time in %q", s)
	}
	if rest == "" {
		return t, nil
	}
	if kind == KindTime {
		return t, fmt.Errorf("fhirpath: time %q must not carry a time zone", s)
	}
	switch {
	case rest == "Z":
		t.HasTZ = true
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		sign := 1
		if rest[0] == '-' {
			sign = -1
		}
		rest = rest[1:]
		h, err := num(2, "zone")
		if err != nil {
			return t, err
		}
		rest = rest[1:]
		m, err := num(2, "zone")
		if err != nil {
			return t, err
		}
		t.HasTZ, t.TZ = true, sign*(h*60+m)
	default:
		return t, fmt.Errorf("fhirpath: bad time zone in %q", s)
	}
	return t, nil
}

// String formats the value the way FHIR writes it (no '@').
func (t Temporal) String() string {
	var sb strings.Builder
	if t.Kind != KindTime {
		fmt.Fprintf(&sb, "%04d", t.Year)
		if t.Prec >= PrecMonth {
			fmt.Fprintf(&sb, "-%02d", t.Month)
		}
		if t.Prec >= PrecDay {
			fmt.Fprintf(&sb, "-%02d", t.Day)
		}
		if t.Kind == KindDate {
			return sb.String()
		}
		if t.Prec < PrecHour {
			return sb.String()
		}
		sb.WriteByte('T')
	}
	fmt.Fprintf(&sb, "%02d", t.Hour)
	if t.Prec >= PrecMinute {
		fmt.Fprintf(&sb, ":%02d", t.Minute)
	}
	if t.Prec >= PrecSecond {
		fmt.Fprintf(&sb, ":%02d", t.Second)
	}
	if t.Prec >= PrecMillisecond {
		fmt.Fprintf(&sb, ".%03d", t.Milli)
	}
	if t.HasTZ && t.Kind == KindDateTime {
		if t.TZ == 0 {
			sb.WriteByte('Z')
		} else {
			off := t.TZ
			sign := '+'
			if off < 0 {
				sign, off = '-', -off
			}
			fmt.Fprintf(&sb, "%c%02d:%02d", sign, off/60, off%60)
		}
	}
	return sb.String()
}

// goTime converts to a time.Time in UTC for arithmetic and comparison;
// missing components take their lowest value and a missing zone is UTC.
func (t Temporal) goTime() time.Time {
	y, mo, d := t.Year, t.Month, t.Day
	if t.Kind == KindTime {
		y, mo, d = 2000, 1, 1
	}
	if mo == 0 {
		mo = 1
	}
	if d == 0 {
		d = 1
	}
	loc := time.UTC
	if t.HasTZ {
		loc = time.FixedZone("", t.TZ*60)
	}
	return time.Date(y, time.Month(mo), d, t.Hour, t.Minute, t.Second, t.Milli*1e6, loc)
}

// fromGoTime rebuilds a Temporal of the same kind, precision and zone as t.
func (t Temporal) fromGoTime(g time.Time) Temporal {
	if t.HasTZ {
		g = g.In(time.FixedZone("", t.TZ*60))
	}
	r := t
	r.Year, r.Month, r.Day = g.Year(), int(g.Month()), g.Day()
	r.Hour, r.Minute, r.Second, r.Milli = g.Hour(), g.Minute(), g.Second(), g.Nanosecond()/1e6
	if t.Kind == KindTime {
		r.Year, r.Month, r.Day = 0, 0, 0
	}
	r.truncate()
	return r
}

func (t *Temporal) truncate() {
	if t.Prec < PrecMonth && t.Kind != KindTime {
		t.Month = 0
	}
	if t.Prec < PrecDay && t.Kind != KindTime {
		t.Day = 0
	}
	if t.Prec < PrecHour {
		t.Hour = 0
	}
	if t.Prec < PrecMinute {
		t.Minute = 0
	}
	if t.Prec < PrecSecond {
		t.Second = 0
	}
	if t.Prec < PrecMillisecond {
		t.Milli = 0
	}
}

// compareTemporal returns -1/0/1, or ok=false when the answer is unknown
// because the precisions differ and the common components are equal.
func compareTemporal(a, b Temporal) (int, bool) {
	if (a.Kind == KindTime) != (b.Kind == KindTime) {
		return 0, false
	}
	// Seconds and milliseconds are one precision for comparison purposes.
	pa, pb := a.Prec, b.Prec
	if pa == PrecMillisecond {
		pa = PrecSecond
	}
	if pb == PrecMillisecond {
		pb = PrecSecond
	}
	// A zoned and an unzoned time of day cannot be ordered: the answer is
	// unknown, as the specification requires.
	if a.HasTZ != b.HasTZ && a.Prec >= PrecHour && b.Prec >= PrecHour {
		return 0, false
	}
	ga, gb := a, b
	if a.HasTZ || b.HasTZ {
		if a.Prec >= PrecHour && b.Prec >= PrecHour {
			u := a.goTime().UTC()
			ga = Temporal{Kind: a.Kind, Prec: a.Prec, Year: u.Year(), Month: int(u.Month()), Day: u.Day(), Hour: u.Hour(), Minute: u.Minute(), Second: u.Second(), Milli: u.Nanosecond() / 1e6}
			v := b.goTime().UTC()
			gb = Temporal{Kind: b.Kind, Prec: b.Prec, Year: v.Year(), Month: int(v.Month()), Day: v.Day(), Hour: v.Hour(), Minute: v.Minute(), Second: v.Second(), Milli: v.Nanosecond() / 1e6}
		}
	}
	comps := func(t Temporal) []int {
		return []int{t.Year, t.Month, t.Day, t.Hour, t.Minute, t.Second*1000 + t.Milli}
	}
	ca, cb := comps(ga), comps(gb)
	start := 0
	if a.Kind == KindTime {
		start = 3
	}
	minP := pa
	if pb < minP {
		minP = pb
	}
	// Precision index: PrecYear=1 -> component 0 ... PrecSecond=6 -> component 5.
	for i := start; i < int(minP); i++ {
		if ca[i] != cb[i] {
			if ca[i] < cb[i] {
				return -1, true
			}
			return 1, true
		}
	}
	if pa != pb {
		return 0, false
	}
	return 0, true
}

// calendarUnits maps FHIRPath calendar duration keywords and their UCUM
// equivalents to a canonical keyword.
var calendarUnits = map[string]string{
	"year": "year", "years": "year", "month": "month", "months": "month",
	"week": "week", "weeks": "week", "day": "day", "days": "day",
	"hour": "hour", "hours": "hour", "minute": "minute", "minutes": "minute",
	"second": "second", "seconds": "second", "millisecond": "millisecond", "milliseconds": "millisecond",
	"a": "year", "mo": "month", "wk": "week", "d": "day", "h": "hour", "min": "minute", "s": "second", "ms": "millisecond",
}

// ucumFactors converts a handful of common UCUM units to a base unit so
// that quantities in different units compare. It is deliberately small:
// anything not listed only compares with the identical unit.
var ucumFactors = map[string]struct {
	base   string
	factor float64
}{
	"g": {"g", 1}, "mg": {"g", 1e-3}, "kg": {"g", 1e3}, "ug": {"g", 1e-6}, "[lb_av]": {"g", 453.59237},
	"m": {"m", 1}, "cm": {"m", 1e-2}, "mm": {"m", 1e-3}, "km": {"m", 1e3}, "[in_i]": {"m", 0.0254}, "[ft_i]": {"m", 0.3048},
	"L": {"L", 1}, "l": {"L", 1}, "mL": {"L", 1e-3}, "ml": {"L", 1e-3}, "dL": {"L", 1e-1},
	"s": {"s", 1}, "ms": {"s", 1e-3}, "min": {"s", 60}, "h": {"s", 3600}, "d": {"s", 86400}, "wk": {"s", 604800},
	"1": {"1", 1}, "%": {"1", 1e-2},
}

// normQuantity returns the value in a base unit; calendar keywords of a
// week or shorter are definite durations and share the UCUM base.
func normQuantity(q Quantity) (float64, string) {
	u := q.Unit
	switch u {
	case "week", "weeks":
		u = "wk"
	case "day", "days":
		u = "d"
	case "hour", "hours":
		u = "h"
	case "minute", "minutes":
		u = "min"
	case "second", "seconds":
		u = "s"
	case "millisecond", "milliseconds":
		u = "ms"
	case "year", "years":
		return q.Value, "year"
	case "month", "months":
		return q.Value, "month"
	}
	if f, ok := ucumFactors[u]; ok {
		return q.Value * f.factor, f.base
	}
	return q.Value, u
}

func compareQuantity(a, b Quantity) (int, bool) {
	va, ua := normQuantity(a)
	vb, ub := normQuantity(b)
	if ua != ub {
		return 0, false
	}
	return compareFloat(va, vb), true
}

func compareFloat(a, b float64) int {
	if floatEqual(a, b) {
		return 0
	}
	if a < b {
		return -1
	}
	return 1
}

// floatEqual tolerates binary rounding (0.1+0.2 = 0.3) since FHIRPath
// decimals are decimal, not binary.
func floatEqual(a, b float64) bool {
	if a == b {
		return true
	}
	d := math.Abs(a - b)
	m := math.Max(math.Abs(a), math.Abs(b))
	return d <= 1e-12*m || d < 1e-300
}

// String formats the quantity as FHIRPath writes it: 5 'mg', 3 days.
func (q Quantity) String() string {
	v := formatDecimal(q.Value)
	if calendarKeyword(q.Unit) {
		return v + " " + q.Unit
	}
	return v + " '" + q.Unit + "'"
}

func formatDecimal(f float64) string {
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// parseNumber turns a JSON number into an int64 or float64.
func parseNumber(n json.Number) (any, bool) {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, true
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, false
	}
	return f, true
}
