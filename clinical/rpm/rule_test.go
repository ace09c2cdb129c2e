package rpm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// oracle is a second, deliberately naive reading of the rules: for each
// candidate reading it counts how many readings of the window come after
// it (no sorting), and it uses the reading's interpretation letters
// directly. Rule.Evaluate must agree with it on every sequence.
func oracle(r Rule, rs []Reading) (active, critical bool, evidence []string) {
	later := func(a, b Reading) bool { // a after b
		return a.Effective.After(b.Effective) || a.Effective.Equal(b.Effective) && a.Ref > b.Ref
	}
	usable := func(x Reading) bool {
		if r.Kind == RuleRise {
			return x.HasValue
		}
		switch x.Interpretation {
		case "N", "H", "L", "HH", "LL", "A", "AA", "HU", "LU", "<", ">":
			return true
		}
		return false
	}
	var latest *Reading
	for i := range rs {
		if usable(rs[i]) && (latest == nil || later(rs[i], *latest)) {
			latest = &rs[i]
		}
	}
	if latest == nil {
		return false, false, nil
	}
	inWindow := func(x Reading) bool {
		return usable(x) && !x.Effective.Before(latest.Effective.Add(-r.Within.Duration))
	}
	if r.Kind == RuleRise {
		min := math.Inf(1)
		minRef := ""
		for _, x := range rs {
			if inWindow(x) && x.Ref != latest.Ref && later(*latest, x) && x.Value < min {
				min, minRef = x.Value, x.Ref
			}
		}
		if minRef != "" && latest.Value-min >= r.By-1e-9 {
			return true, false, []string{minRef, latest.Ref}
		}
		return false, false, nil
	}
	abnormal, crit := 0, 0
	for _, x := range rs {
		if !inWindow(x) {
			continue
		}
		after := 0
		for _, y := range rs {
			if inWindow(y) && later(y, x) {
				after++
			}
		}
		if after >= r.N {
			continue
		}
		switch x.Interpretation {
		case "HH", "LL", "AA":
			crit++
			abnormal++
			evidence = append(evidence, x.Ref)
		case "H", "L", "A", "HU", "LU", "<", ">":
			abnormal++
			evidence = append(evidence, x.Ref)
		}
	}
	if abnormal < r.K {
		return false, false, nil
	}
	slices.Sort(evidence) // compared as sets
	return true, crit >= r.K, evidence
}

var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

// rd builds a reading h hours after t0.
func rd(id string, h float64, interp string) Reading {
	return Reading{Ref: "Observation/" + id, Effective: t0.Add(time.Duration(h * float64(time.Hour))), Interpretation: interp}
}

func wt(id string, h float64, kg float64) Reading {
	r := rd(id, h, "")
	r.Value, r.HasValue = kg, true
	return r
}

func checkAgainstOracle(t *testing.T, name string, r Rule, rs []Reading) Result {
	t.Helper()
	got := r.Evaluate(rs)
	active, critical, evidence := oracle(r, rs)
	var gotEv []string
	for _, e := range got.Evidence {
		gotEv = append(gotEv, e.Ref)
	}
	if r.Kind == RuleCount {
		slices.Sort(gotEv)
	}
	if got.Active != active || got.Critical != critical || !slices.Equal(gotEv, evidence) {
		t.Errorf("%s: got active=%v critical=%v evidence=%v; oracle says %v %v %v", name, got.Active, got.Critical, gotEv, active, critical, evidence)
	}
	return got
}

func TestRuleSequences(t *testing.T) {
	count := Rule{Kind: RuleCount, K: 2, N: 3, Within: Duration{24 * time.Hour}}
	rise := Rule{Kind: RuleRise, By: 1, Within: Duration{72 * time.Hour}}
	cases := []struct {
		name string
		rule Rule
		rs   []Reading
		// what the scenario is built to show, checked besides the oracle
		active, critical bool
	}{
		{"in order, two of three low", count, []Reading{rd("a", 0, "N"), rd("b", 1, "L"), rd("c", 2, "L")}, true, false},
		{"out of order, same readings", count, []Reading{rd("c", 2, "L"), rd("a", 0, "N"), rd("b", 1, "L")}, true, false},
		{"late upload lands before the window", count, []Reading{rd("b", 30, "N"), rd("c", 31, "H"), rd("late", 1, "H")}, false, false},
		{"late upload inside the window completes the breach", count, []Reading{rd("b", 30, "N"), rd("c", 31, "H"), rd("late", 20, "H")}, true, false},
		{"single noisy spike", count, []Reading{rd("a", 0, "N"), rd("b", 1, "HH"), rd("c", 2, "N"), rd("d", 3, "N")}, false, false},
		{"spike then older abnormal out of the last three", count, []Reading{rd("a", 0, "H"), rd("b", 1, "N"), rd("c", 2, "N"), rd("d", 3, "H")}, false, false},
		{"recovery ends the alert", count, []Reading{rd("a", 0, "L"), rd("b", 1, "L"), rd("c", 2, "N"), rd("d", 3, "N")}, false, false},
		{"window expiry: abnormal readings older than 24 h", count, []Reading{rd("a", 0, "H"), rd("b", 1, "H"), rd("c", 30, "N")}, false, false},
		{"critical sustained", count, []Reading{rd("a", 0, "LL"), rd("b", 1, "N"), rd("c", 2, "LL")}, true, true},
		{"critical once, high once: alert, not critical", count, []Reading{rd("a", 0, "HH"), rd("b", 1, "H")}, true, false},
		{"uninterpreted readings are skipped", count, []Reading{rd("a", 0, "H"), rd("b", 1, ""), rd("c", 2, "IND"), rd("d", 3, "H")}, true, false},
		{"no readings", count, nil, false, false},
		{"weight gain 1 kg in 3 days", rise, []Reading{wt("a", 0, 80), wt("b", 24, 80.4), wt("c", 48, 81)}, true, false},
		{"weight gain just short", rise, []Reading{wt("a", 0, 80), wt("b", 48, 80.9)}, false, false},
		{"weight gain over more than 3 days", rise, []Reading{wt("a", 0, 80), wt("b", 73, 81.2)}, false, false},
		{"weight gain out of order", rise, []Reading{wt("c", 48, 81.5), wt("a", 0, 80), wt("b", 24, 81)}, true, false},
		{"weight recovery", rise, []Reading{wt("a", 0, 80), wt("b", 24, 81.2), wt("c", 48, 80.3)}, false, false},
		{"weight in pounds converted", rise, []Reading{wt("a", 0, 176*0.45359237), wt("b", 24, (176+1/0.45359237)*0.45359237)}, true, false},
	}
	for _, c := range cases {
		got := checkAgainstOracle(t, c.name, c.rule, c.rs)
		if got.Active != c.active || got.Critical != c.critical {
			t.Errorf("%s: active=%v critical=%v, the scenario needs %v %v", c.name, got.Active, got.Critical, c.active, c.critical)
		}
	}
}

// TestRuleRandomSequences: random sequences, shuffled, agree with the
// oracle, and the order of arrival never changes the result.
func TestRuleRandomSequences(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 3))
	codes := []string{"N", "N", "N", "H", "L", "HH", "LL", ""}
	rules := []Rule{
		{Kind: RuleCount, K: 2, N: 3, Within: Duration{24 * time.Hour}},
		{Kind: RuleCount, K: 3, N: 5, Within: Duration{12 * time.Hour}},
		{Kind: RuleCount, K: 1, N: 1, Within: Duration{time.Hour}},
		{Kind: RuleRise, By: 1, Within: Duration{72 * time.Hour}},
	}
	for i := range 400 {
		r := rules[i%len(rules)]
		var rs []Reading
		for j := range rng.IntN(8) {
			x := rd(fmt.Sprintf("r%d", j), float64(rng.IntN(96)), codes[rng.IntN(len(codes))])
			x.Value, x.HasValue = 78+rng.Float64()*4, rng.IntN(6) > 0
			rs = append(rs, x)
		}
		want := checkAgainstOracle(t, fmt.Sprintf("random %d", i), r, rs)
		rng.Shuffle(len(rs), func(a, b int) { rs[a], rs[b] = rs[b], rs[a] })
		if got := r.Evaluate(rs); got.Active != want.Active || got.Critical != want.Critical || got.Latest.Ref != want.Latest.Ref {
			t.Fatalf("random %d: arrival order changed the result", i)
		}
	}
}
