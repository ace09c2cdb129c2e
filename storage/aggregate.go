package storage

import (
	"context"
	"math"
	"slices"
	"strings"
)

// AggregateQuery selects numeric index values to summarize: the Num of
// every Value entry (a quantity parameter) of the current resources of
// Type that match Filter.
type AggregateQuery struct {
	Type   string
	Filter Expr
	// Value is a quantity parameter ("value-quantity"); its entries' Num
	// are the values, grouped by unit (System, Code).
	Value string
	// Where, when set, takes Value entries only from the resources that
	// also match it (the code measured by Observation.value); Filter
	// applies to every value.
	Where Expr
	// Component, when set, also takes values recorded in composite index
	// entries (the components of an Observation, R4 combo semantics).
	Component *ComponentValues
	// Subject is a reference parameter ("patient"). A resource belongs to
	// one subject, its lowest target of Subject ("Type/id" order): a
	// Sample carries it and Summary.Subjects counts the distinct ones
	// among the summarized resources (never a resource's other targets,
	// which would inflate small-cell counts). Empty: no subjects (a
	// caller that needs no count of patients saves their lookups).
	Subject string
	// Date is a date parameter ("date"): a Sample carries the lowest Low
	// of the resource's entries (Samples only).
	Date string
	// Quantiles are fractions in [0, 1] (Summarize only).
	Quantiles []float64
}

// ComponentValues selects values from a composite parameter: each entry
// of Param that satisfies Cond (an entry-level condition, e.g. Part 0 is
// a code) gives the Num, System and Code of its quantity part Part.
type ComponentValues struct {
	Param string // "component-code-value-quantity"
	Cond  Expr
	Part  int
}

// SamplesOf is the reference meaning of Aggregator.Samples for one current
// resource of q.Type with these index entries: its values if it matches
// q.Filter, each with the resource's subject and date.
func SamplesOf(id string, entries []Entry, q AggregateQuery) ([]Sample, error) {
	if q.Filter != nil {
		if ok, err := Matches(q.Filter, id, entries); err != nil || !ok {
			return nil, err
		}
	}
	values := q.Where == nil
	if !values {
		ok, err := Matches(q.Where, id, entries)
		if err != nil {
			return nil, err
		}
		values = ok
	}
	subject := ""
	date := MinDate
	for _, e := range entries {
		if e.Param == q.Subject && e.Kind == KindReference && e.RefID != "" {
			if ref := e.RefType + "/" + e.RefID; subject == "" || ref < subject {
				subject = ref
			}
		}
		if e.Param == q.Date && e.Kind == KindDate && (date == MinDate || e.Low < date) {
			date = e.Low
		}
	}
	var out []Sample
	for i := range entries {
		e := &entries[i]
		switch {
		case values && e.Param == q.Value && e.Kind == KindQuantity:
			out = append(out, Sample{ID: id, System: e.System, Code: e.Code, Num: e.Num, Subject: subject, Date: date})
		case q.Component != nil && e.Param == q.Component.Param && e.Kind == KindComposite:
			ok, err := MatchEntry(q.Component.Cond, e)
			if err != nil {
				return nil, err
			}
			if p := q.Component.Part; ok && p >= 0 && p < len(e.Parts) && e.Parts[p].Kind == KindQuantity {
				v := e.Parts[p]
				out = append(out, Sample{ID: id, System: v.System, Code: v.Code, Num: v.Num, Subject: subject, Date: date})
			}
		}
	}
	return out, nil
}

// Summary is the statistics of one unit's values.
type Summary struct {
	System, Code string // the unit of the values
	Count        int    // values
	Subjects     int    // distinct subjects (lowest Subject targets) of the resources holding them
	Sum          float64
	Min, Max     float64
	Mean         float64
	// SquaredDeviations is the sum of (value - Mean)²: the sample variance
	// is SquaredDeviations / (Count - 1).
	SquaredDeviations float64
	// Quantiles follow AggregateQuery.Quantiles: linear interpolation
	// between the closest ranks (R-7, the usual spreadsheet PERCENTILE).
	Quantiles []float64
}

// Sample is one value with what a caller needs to filter, transform and
// summarize it itself.
type Sample struct {
	ID           string // the resource's id
	System, Code string // the unit
	Num          float64
	Subject      string // "Type/id" of the Subject target; "" when none
	Date         int64  // the resource's Date, Unix ms; MinDate when none
}

// Aggregator is an optional Backend interface (found with As): statistics
// computed in the database instead of by loading resources.
type Aggregator interface {
	// Summarize returns one Summary per unit, ordered by System and Code;
	// no values, no Summary. Its meaning is SummarizeSamples over Samples.
	Summarize(ctx context.Context, q AggregateQuery) ([]Summary, error)
	// Samples returns every value with its resource's subject and date, in
	// no particular order.
	Samples(ctx context.Context, q AggregateQuery) ([]Sample, error)
}

// SummarizeSamples is the reference meaning of Aggregator.Summarize: the
// samples grouped by unit, ordered by System and Code.
func SummarizeSamples(samples []Sample, quantiles []float64) []Summary {
	type unit struct{ system, code string }
	groups := map[unit][]Sample{}
	for _, s := range samples {
		u := unit{s.System, s.Code}
		groups[u] = append(groups[u], s)
	}
	units := make([]unit, 0, len(groups))
	for u := range groups {
		units = append(units, u)
	}
	slices.SortFunc(units, func(a, b unit) int {
		if c := strings.Compare(a.system, b.system); c != 0 {
			return c
		}
		return strings.Compare(a.code, b.code)
	})
	out := make([]Summary, 0, len(units))
	for _, u := range units {
		g := groups[u]
		vals := make([]float64, len(g))
		subjects := map[string]bool{}
		sum := 0.0
		for i, s := range g {
			vals[i] = s.Num
			sum += s.Num
			if s.Subject != "" {
				subjects[s.Subject] = true
			}
		}
		slices.Sort(vals)
		mean := sum / float64(len(vals))
		sq := 0.0
		for _, v := range vals {
			sq += (v - mean) * (v - mean)
		}
		sm := Summary{System: u.system, Code: u.code, Count: len(vals), Subjects: len(subjects),
			Sum: sum, Min: vals[0], Max: vals[len(vals)-1], Mean: mean, SquaredDeviations: sq}
		for _, q := range quantiles {
			sm.Quantiles = append(sm.Quantiles, QuantileOfSorted(vals, q))
		}
		out = append(out, sm)
	}
	return out
}

// QuantileRanks are the zero-based ranks (in ascending order) whose values
// QuantileOfSorted interpolates for fraction q of n values, and the weight
// of the upper one.
func QuantileRanks(n int, q float64) (lo, hi int, weight float64) {
	h := float64(n-1) * math.Min(math.Max(q, 0), 1)
	lo = int(math.Floor(h))
	hi = min(lo+1, n-1)
	return lo, hi, h - float64(lo)
}

// QuantileOfSorted is the q quantile of ascending values.
func QuantileOfSorted(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	lo, hi, w := QuantileRanks(len(sorted), q)
	return sorted[lo] + w*(sorted[hi]-sorted[lo])
}
