package rpm

import (
	"cmp"
	"slices"
)

// CriticalRangeURL is the extension on Goal.target whose valueRange is
// the care team's critical range for the measure: outside it a reading is
// LL or HH. Without it the default critical bands apply, moved out of the
// Goal's target range where they would reach into it (a COPD patient's
// SpO2 target of 88-100 % makes 90 % low, not critical).
const CriticalRangeURL = "http://anodyne-fhir.org/fhir/StructureDefinition/rpm-critical-range"

// A per-patient override is a Goal the care team records:
//
//   - Goal.subject is the Patient, Goal.lifecycleStatus is "active", and
//     an active CarePlan of the same Patient lists it in CarePlan.goal (a
//     Goal outside a plan is an aspiration, not an instruction to the
//     monitoring);
//   - Goal.target.measure carries the measure's LOINC code, and
//     target.detailRange (low and/or high, in any unit the measure knows)
//     or target.detailQuantity with a comparator (<, <=, >=, >: "pain <= 4")
//     is the range the readings should stay in;
//   - optionally, the CriticalRangeURL extension on that target.
//
// A side the Goal leaves open keeps the default band. When several Goals
// target one measure, the one updated last wins (then the lowest id), so
// the result does not depend on search order.

// goalCandidate is one Goal's limits for a measure, with what orders it.
type goalCandidate struct {
	limits  Limits
	updated string // meta.lastUpdated, RFC 3339 in UTC: compares as text
	id      string
}

// GoalLimits gives the limits a Goal sets for m, false when none of its
// targets measure m in a usable way.
func GoalLimits(m *Measure, goal map[string]any, id string) (Limits, bool) {
	targets, _ := goal["target"].([]any)
	for _, t := range targets {
		tm := asMap(t)
		if !measures(m, tm["measure"]) {
			continue
		}
		l, ok := targetLimits(m, tm)
		if ok {
			l.Source = "Goal/" + id
			return l, true
		}
	}
	return Limits{}, false
}

func measures(m *Measure, cc any) bool {
	codings, _ := asMap(cc)["coding"].([]any)
	for _, c := range codings {
		cm := asMap(c)
		sys, _ := cm["system"].(string)
		code, _ := cm["code"].(string)
		if sys == LOINC && m.HasCode(code) {
			return true
		}
	}
	return false
}

// quantity reads a Quantity in the measure's unit; ok is false for a
// missing value or an unknown unit.
func quantity(m *Measure, q map[string]any) (float64, bool) {
	v, ok := number(q["value"])
	if !ok {
		return 0, false
	}
	if sys, _ := q["system"].(string); sys != "" && sys != UCUM {
		return 0, false
	}
	unit, _ := q["code"].(string)
	if unit == "" {
		unit, _ = q["unit"].(string)
	}
	if unit == "" && m.Unit == "{score}" {
		unit = m.Unit
	}
	return m.ToBase(v, unit)
}

func targetLimits(m *Measure, target map[string]any) (Limits, bool) {
	l := m.Defaults()
	var low, high *Bound // the Goal's own bands, nil for a side it leaves open
	var normLow, normHigh *float64
	if r := asMap(target["detailRange"]); r != nil {
		if v, ok := quantity(m, asMap(r["low"])); ok {
			low, normLow = &Bound{Op: "<", Value: v}, &v
		}
		if v, ok := quantity(m, asMap(r["high"])); ok {
			high, normHigh = &Bound{Op: ">", Value: v}, &v
		}
	} else if q := asMap(target["detailQuantity"]); q != nil {
		if v, ok := quantity(m, q); ok {
			// A strict comparator has no inclusive bound for the range.
			switch comp, _ := q["comparator"].(string); comp {
			case "<=":
				high, normHigh = &Bound{Op: ">", Value: v}, &v
			case "<":
				high = &Bound{Op: ">=", Value: v}
			case ">=":
				low, normLow = &Bound{Op: "<", Value: v}, &v
			case ">":
				low = &Bound{Op: "<=", Value: v}
			}
		}
	}
	if low == nil && high == nil {
		return Limits{}, false
	}
	if low != nil {
		l.Low, l.Normal.Low = low, normLow
		if reaches(l.CriticalLow, low) {
			l.CriticalLow = low
		}
	}
	if high != nil {
		l.High, l.Normal.High = high, normHigh
		if reaches(l.CriticalHigh, high) {
			l.CriticalHigh = high
		}
	}
	// A default normal bound the Goal's other side contradicts goes.
	for _, n := range []**float64{&l.Normal.Low, &l.Normal.High} {
		if *n != nil && (l.Low.Breached(**n) || l.High.Breached(**n)) {
			*n = nil
		}
	}
	if ext := criticalRange(target); ext != nil {
		if v, ok := quantity(m, asMap(ext["low"])); ok {
			l.CriticalLow = &Bound{Op: "<", Value: v}
		}
		if v, ok := quantity(m, asMap(ext["high"])); ok {
			l.CriticalHigh = &Bound{Op: ">", Value: v}
		}
	}
	return l, true
}

// reaches reports whether critical band c would call a value critical
// that band b calls in range (the critical band reaches into the target).
func reaches(c, b *Bound) bool {
	if c == nil {
		return false
	}
	if c.Value != b.Value {
		lower := c.Op == "<" || c.Op == "<="
		return lower && c.Value > b.Value || !lower && c.Value < b.Value
	}
	// Same number: only a critical band that includes it while b does not.
	return (c.Op == "<=" || c.Op == ">=") && (b.Op == "<" || b.Op == ">")
}

func criticalRange(target map[string]any) map[string]any {
	exts, _ := target["extension"].([]any)
	for _, e := range exts {
		em := asMap(e)
		if u, _ := em["url"].(string); u == CriticalRangeURL {
			return asMap(em["valueRange"])
		}
	}
	return nil
}

// pickGoal chooses among several Goals' limits for one measure.
func pickGoal(cands []goalCandidate) (Limits, bool) {
	if len(cands) == 0 {
		return Limits{}, false
	}
	best := slices.MaxFunc(cands, func(a, b goalCandidate) int {
		if c := cmp.Compare(a.updated, b.updated); c != 0 {
			return c
		}
		return cmp.Compare(b.id, a.id) // the lower id is "greater"
	})
	return best.limits, true
}
