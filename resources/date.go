package resources

import (
	"strconv"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// dateRange parses a FHIR date, dateTime or instant (and the search forms
// with hh:mm and no seconds) into the inclusive range of milliseconds it
// denotes at its precision: "2020" is the whole year, "2020-03" the month,
// "2020-03-04T10:00" the minute. A time without a zone is taken as UTC: R4
// leaves it to the server, and UTC keeps indexing and searching consistent
// and independent of where the server runs.
func dateRange(s string) (lo, hi int64, err error) {
	return parseDateRange(s)
}

// DateRange is the inclusive range of milliseconds a FHIR date, dateTime
// or instant denotes at its precision (see dateRange), for operation
// parameters parsed above this package ($stats period).
func DateRange(s string) (lo, hi int64, err error) { return dateRange(s) }

func parseDateRange(s string) (lo, hi int64, err error) {
	bad := func() (int64, int64, error) { return 0, 0, invalid("invalid date %q", s) }
	datePart, timePart, hasTime := strings.Cut(s, "T")
	fields := strings.Split(datePart, "-")
	if len(fields) > 3 || len(fields[0]) != 4 {
		return bad()
	}
	nums := [3]int{0, 1, 1}
	for i, f := range fields {
		if (i > 0 && len(f) != 2) || !allDigits(f) {
			return bad()
		}
		nums[i], _ = strconv.Atoi(f)
	}
	year, month, day := nums[0], nums[1], nums[2]
	if month < 1 || month > 12 || day < 1 || day > daysIn(year, time.Month(month)) {
		return bad()
	}
	if !hasTime {
		start := time.Date(year, time.Month(month), day, 0, 0, 0, 0, time.UTC)
		var end time.Time
		switch len(fields) {
		case 1:
			end = start.AddDate(1, 0, 0)
		case 2:
			end = start.AddDate(0, 1, 0)
		default:
			end = start.AddDate(0, 0, 1)
		}
		return start.UnixMilli(), end.UnixMilli() - 1, nil
	}
	if len(fields) != 3 {
		return bad()
	}
	// Split the zone off: "Z", "+hh:mm" or "-hh:mm" after the clock.
	loc := time.UTC
	clock := timePart
	if strings.HasSuffix(clock, "Z") {
		clock = clock[:len(clock)-1]
	} else if i := strings.LastIndexAny(clock, "+-"); i >= 0 {
		zone := clock[i+1:]
		clock = clock[:i]
		zh, zm, ok := strings.Cut(zone, ":")
		if !ok || len(zh) != 2 || len(zm) != 2 || !allDigits(zh) || !allDigits(zm) {
			return bad()
		}
		h, _ := strconv.Atoi(zh)
		m, _ := strconv.Atoi(zm)
		if h > 14 || m > 59 {
			return bad()
		}
		off := h*3600 + m*60
		if timePart[i] == '-' {
			off = -off
		}
		loc = time.FixedZone("", off)
	}
	hms := strings.Split(clock, ":")
	if len(hms) < 2 || len(hms) > 3 {
		return bad()
	}
	var hmsv [3]int
	frac := ""
	for i, f := range hms {
		if i == 2 {
			f, frac, _ = strings.Cut(f, ".")
			if strings.Contains(hms[2], ".") && (frac == "" || !allDigits(frac)) {
				return bad()
			}
		}
		if len(f) != 2 || !allDigits(f) {
			return bad()
		}
		hmsv[i], _ = strconv.Atoi(f)
	}
	if hmsv[0] > 23 || hmsv[1] > 59 || hmsv[2] > 60 {
		return bad()
	}
	nanos := 0
	if frac != "" {
		f := (frac + "000000000")[:9]
		nanos, _ = strconv.Atoi(f)
	}
	start := time.Date(year, time.Month(month), day, hmsv[0], hmsv[1], hmsv[2], nanos, loc)
	lo = start.UnixMilli()
	var width int64
	switch {
	case len(hms) == 2:
		width = 60_000
	case frac == "":
		width = 1000
	case len(frac) == 1:
		width = 100
	case len(frac) == 2:
		width = 10
	default:
		width = 1
	}
	return lo, lo + width - 1, nil
}

func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// indexDate extracts date ranges from date, dateTime, instant, Period (open
// ends become storage.MinDate/MaxDate) and Timing (each event, and the
// repeat bounds when they are a Period). Unparseable values are skipped:
// validation, not indexing, reports them.
func indexDate(p *Param, n node) []storage.Entry {
	entry := func(lo, hi int64) storage.Entry {
		return storage.Entry{Param: p.Code, Kind: storage.KindDate, Low: lo, High: hi}
	}
	switch v := n.v.(type) {
	case string:
		if lo, hi, err := dateRange(v); err == nil {
			return []storage.Entry{entry(lo, hi)}
		}
	case map[string]any:
		switch n.typ {
		case "Timing":
			var out []storage.Entry
			events, _ := v["event"].([]any)
			for _, e := range events {
				if s, ok := e.(string); ok {
					if lo, hi, err := dateRange(s); err == nil {
						out = append(out, entry(lo, hi))
					}
				}
			}
			if rep, ok := v["repeat"].(map[string]any); ok {
				if bp, ok := rep["boundsPeriod"].(map[string]any); ok {
					if lo, hi, ok := periodRange(bp); ok {
						out = append(out, entry(lo, hi))
					}
				}
			}
			return out
		default: // Period
			if lo, hi, ok := periodRange(v); ok {
				return []storage.Entry{entry(lo, hi)}
			}
		}
	}
	return nil
}

func periodRange(m map[string]any) (lo, hi int64, ok bool) {
	lo, hi = storage.MinDate, storage.MaxDate
	s, _ := m["start"].(string)
	e, _ := m["end"].(string)
	if s == "" && e == "" {
		return 0, 0, false
	}
	if s != "" {
		l, _, err := dateRange(s)
		if err != nil {
			return 0, 0, false
		}
		lo = l
	}
	if e != "" {
		_, h, err := dateRange(e)
		if err != nil {
			return 0, 0, false
		}
		hi = h
	}
	return lo, hi, true
}

// compileDate compiles a prefixed date into a condition on one entry's
// range [Low, High] against the value's range [a, b] (search.html#prefix):
//
//	eq  Low >= a and High <= b          (the value's range contains the resource's)
//	ne  Low < a or High > b
//	gt  High > b                        (the resource's range extends above)
//	lt  Low < a
//	ge  High > b or (Low >= a and High <= b)   (gt or eq, as the spec words it)
//	le  Low < a or (Low >= a and High <= b)
//	sa  Low > b                         (starts after)
//	eb  High < a                        (ends before)
//	ap  the ranges overlap once [a, b] is widened by 10% of the distance
//	    from now to the value, and at least by one day.
func (r *Registry) compileDate(v string) (storage.Expr, error) {
	pfx, rest, err := splitPrefix(v)
	if err != nil {
		return nil, err
	}
	a, b, err := dateRange(rest)
	if err != nil {
		return nil, err
	}
	lo := func(op storage.Op, x int64) storage.Expr {
		return storage.Cmp{Field: storage.FieldLow, Op: op, Value: x}
	}
	hi := func(op storage.Op, x int64) storage.Expr {
		return storage.Cmp{Field: storage.FieldHigh, Op: op, Value: x}
	}
	and := func(es ...storage.Expr) storage.Expr { return storage.And{Exprs: es} }
	or := func(es ...storage.Expr) storage.Expr { return storage.Or{Exprs: es} }
	eq := and(lo(storage.OpGe, a), hi(storage.OpLe, b))
	switch pfx {
	case pfxEq:
		return eq, nil
	case pfxNe:
		return or(lo(storage.OpLt, a), hi(storage.OpGt, b)), nil
	case pfxGt:
		return hi(storage.OpGt, b), nil
	case pfxLt:
		return lo(storage.OpLt, a), nil
	case pfxGe:
		return or(hi(storage.OpGt, b), eq), nil
	case pfxLe:
		return or(lo(storage.OpLt, a), eq), nil
	case pfxSa:
		return lo(storage.OpGt, b), nil
	case pfxEb:
		return hi(storage.OpLt, a), nil
	case pfxAp:
		now := r.now().UnixMilli()
		gap := now - a
		if now > b {
			gap = now - b
		} else if now >= a {
			gap = 0
		}
		if gap < 0 {
			gap = -gap
		}
		d := max(gap/10, int64(24*time.Hour/time.Millisecond))
		return and(lo(storage.OpLe, b+d), hi(storage.OpGe, a-d)), nil
	}
	return nil, invalid("prefix %s is not valid on a date", pfx)
}
