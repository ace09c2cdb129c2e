package rpm

import (
	"cmp"
	"slices"
	"time"
)

// Result is what a rule makes of a sequence of readings.
type Result struct {
	// Active: the breach is sustained at the latest reading.
	Active bool
	// Critical: the breach is sustained by critical readings alone (HH,
	// LL, AA: at least k of the last n), which raises a DetectedIssue.
	Critical bool
	// Evidence are the readings that make the breach, oldest first: the
	// abnormal ones of the window (count), or the baseline and the latest
	// (rise). Empty when inactive.
	Evidence []Reading
	// Latest is the reading the rule was evaluated at (the last one by
	// effective time); zero when there was none to evaluate.
	Latest Reading
}

// sortReadings orders by effective time, then by reference, so that the
// result does not depend on the order readings arrived in.
func sortReadings(rs []Reading) []Reading {
	out := slices.Clone(rs)
	slices.SortStableFunc(out, func(a, b Reading) int {
		if c := a.Effective.Compare(b.Effective); c != 0 {
			return c
		}
		return cmp.Compare(a.Ref, b.Ref)
	})
	return out
}

// Evaluate applies the rule to readings given in any order: they are
// evaluated in effective-time order, anchored at the latest.
func (r Rule) Evaluate(readings []Reading) Result {
	rs := sortReadings(readings)
	if r.Kind == RuleRise {
		return r.rise(rs)
	}
	return r.count(rs)
}

// window keeps the readings within r.Within of the last one (inclusive).
func (r Rule) window(rs []Reading) []Reading {
	if len(rs) == 0 {
		return nil
	}
	from := rs[len(rs)-1].Effective.Add(-r.Within.Duration)
	i := len(rs) - 1
	for i > 0 && !rs[i-1].Effective.Before(from) {
		i--
	}
	return rs[i:]
}

func (r Rule) count(rs []Reading) Result {
	var interpreted []Reading
	for _, x := range rs {
		if severity(x.Interpretation) > 0 {
			interpreted = append(interpreted, x)
		}
	}
	w := r.window(interpreted)
	if len(w) == 0 {
		return Result{}
	}
	res := Result{Latest: w[len(w)-1]}
	if len(w) > r.N {
		w = w[len(w)-r.N:]
	}
	critical := 0
	for _, x := range w {
		switch severity(x.Interpretation) {
		case 3:
			critical++
			fallthrough
		case 2:
			res.Evidence = append(res.Evidence, x)
		}
	}
	res.Active = len(res.Evidence) >= r.K
	res.Critical = critical >= r.K
	if !res.Active {
		res.Evidence = nil
	}
	return res
}

// riseTolerance absorbs unit conversion (pounds to kilograms) so that a
// gain of exactly "by" counts.
const riseTolerance = 1e-9

func (r Rule) rise(rs []Reading) Result {
	var valued []Reading
	for _, x := range rs {
		if x.HasValue {
			valued = append(valued, x)
		}
	}
	w := r.window(valued)
	if len(w) == 0 {
		return Result{}
	}
	latest := w[len(w)-1]
	res := Result{Latest: latest}
	base := -1
	for i, x := range w[:len(w)-1] {
		if base < 0 || x.Value < w[base].Value {
			base = i
		}
	}
	if base >= 0 && latest.Value-w[base].Value >= r.By-riseTolerance {
		res.Active = true
		res.Evidence = []Reading{w[base], latest}
	}
	return res
}

// Since is the earliest effective time a reading can have and still
// matter to the rule evaluated at latest.
func (r Rule) Since(latest time.Time) time.Time { return latest.Add(-r.Within.Duration) }
