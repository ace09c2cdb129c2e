package rpm

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// System URIs written on derived data and read from readings.
const (
	LOINC          = "http://loinc.org"
	UCUM           = "http://unitsofmeasure.org"
	Interpretation = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
	rangeMeaning   = "http://terminology.hl7.org/CodeSystem/referencerange-meaning"
)

// The interpretation codes this package writes (v3-ObservationInterpretation).
const (
	Normal       = "N"
	High         = "H"
	Low          = "L"
	CriticalHigh = "HH"
	CriticalLow  = "LL"
)

//go:embed thresholds.json
var defaultThresholds []byte

// Bound is one side of a band: a reading breaches it when "value Op Value"
// holds (Op is <, <=, > or >=), in the unit of its Measure.
type Bound struct {
	Op    string  `json:"op"`
	Value float64 `json:"value"`
}

// Breached reports whether v lies on the abnormal side of b.
func (b *Bound) Breached(v float64) bool {
	if b == nil {
		return false
	}
	switch b.Op {
	case "<":
		return v < b.Value
	case "<=":
		return v <= b.Value
	case ">":
		return v > b.Value
	case ">=":
		return v >= b.Value
	}
	return false
}

func (b *Bound) check(name string, lower bool) error {
	if b == nil {
		return nil
	}
	if lower && b.Op != "<" && b.Op != "<=" || !lower && b.Op != ">" && b.Op != ">=" {
		return fmt.Errorf("%s: op %q points the wrong way", name, b.Op)
	}
	if math.IsNaN(b.Value) || math.IsInf(b.Value, 0) {
		return fmt.Errorf("%s: value is not finite", name)
	}
	return nil
}

// Range is the normal range written as Observation.referenceRange; either
// side may be open.
type Range struct {
	Low  *float64 `json:"low,omitempty"`
	High *float64 `json:"high,omitempty"`
}

// Conversion turns a value in another unit into the measure's unit:
// base = (value + Offset) * Scale.
type Conversion struct {
	Scale  float64 `json:"scale"`
	Offset float64 `json:"offset"`
}

// Duration is a time.Duration written as "24h" in the data file.
type Duration struct{ time.Duration }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	d.Duration = v
	return nil
}

// Rule kinds.
const (
	RuleCount = "count" // at least K of the last N readings within Within are abnormal
	RuleRise  = "rise"  // the latest value exceeds the lowest of the preceding Within by at least By
)

// Rule says when readings of one measure make a sustained breach.
type Rule struct {
	Kind   string   `json:"kind"`
	K      int      `json:"k,omitempty"`
	N      int      `json:"n,omitempty"`
	Within Duration `json:"within"`
	By     float64  `json:"by,omitempty"`
}

func (r Rule) check() error {
	switch {
	case r.Within.Duration <= 0:
		return errors.New("rule: within must be positive")
	case r.Kind == RuleCount && (r.K < 1 || r.N < r.K):
		return fmt.Errorf("rule: count needs 1 <= k <= n (k=%d n=%d)", r.K, r.N)
	case r.Kind == RuleRise && !(r.By > 0):
		return errors.New("rule: rise needs by > 0")
	case r.Kind != RuleCount && r.Kind != RuleRise:
		return fmt.Errorf("rule: unknown kind %q", r.Kind)
	}
	return nil
}

// Describe is the rule in words, for Flag and DetectedIssue texts.
func (r Rule) Describe(unit string) string {
	if r.Kind == RuleRise {
		return fmt.Sprintf("a rise of %s %s or more within %s", trimFloat(r.By), unit, hours(r.Within.Duration))
	}
	return fmt.Sprintf("%d of the last %d readings within %s", r.K, r.N, hours(r.Within.Duration))
}

func hours(d time.Duration) string {
	if d%(24*time.Hour) == 0 && d >= 48*time.Hour {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return strings.TrimSuffix(strings.TrimSuffix(d.String(), "0s"), "0m") // "24h"
}

// Measure is one monitored quantity: its codes, unit, bands and rule.
type Measure struct {
	Key          string                `json:"key"`
	Display      string                `json:"display"`
	Codes        []string              `json:"codes"`
	Unit         string                `json:"unit"`
	Units        map[string]Conversion `json:"units,omitempty"`
	Low          *Bound                `json:"low,omitempty"`
	High         *Bound                `json:"high,omitempty"`
	CriticalLow  *Bound                `json:"criticalLow,omitempty"`
	CriticalHigh *Bound                `json:"criticalHigh,omitempty"`
	Normal       *Range                `json:"normal,omitempty"`
	Rule         Rule                  `json:"rule"`
	Source       string                `json:"source"`
}

// Interpreted reports whether readings of m get an interpretation (a
// measure with a trend rule only, such as weight, has no bands).
func (m *Measure) Interpreted() bool {
	return m.Low != nil || m.High != nil || m.CriticalLow != nil || m.CriticalHigh != nil
}

// HasCode reports whether code is one of the measure's LOINC codes.
func (m *Measure) HasCode(code string) bool { return slices.Contains(m.Codes, code) }

// ToBase converts a value in unit (a UCUM code) to the measure's unit.
func (m *Measure) ToBase(v float64, unit string) (float64, bool) {
	if unit == m.Unit {
		return v, true
	}
	c, ok := m.Units[unit]
	if !ok {
		return 0, false
	}
	// Rounded to a billionth: 100.4 [degF] is 38 Cel, not 38.00000000000001.
	return math.Round((v+c.Offset)*c.Scale*1e9) / 1e9, true
}

// FromBase converts a value in the measure's unit to unit, rounded to
// what a referenceRange needs (a hundredth).
func (m *Measure) FromBase(v float64, unit string) float64 {
	if unit == m.Unit {
		return v
	}
	c := m.Units[unit]
	return math.Round((v/c.Scale-c.Offset)*100) / 100
}

// Limits are the bands in force for one patient's readings of a measure:
// the defaults, or a care team's Goal (Source names it).
type Limits struct {
	Low, High, CriticalLow, CriticalHigh *Bound
	Normal                               Range
	Source                               string // "" for the defaults, else "Goal/<id>"
}

// Defaults are the measure's own limits.
func (m *Measure) Defaults() Limits {
	l := Limits{Low: m.Low, High: m.High, CriticalLow: m.CriticalLow, CriticalHigh: m.CriticalHigh}
	if m.Normal != nil {
		l.Normal = *m.Normal
	}
	return l
}

// Interpret gives the v3-ObservationInterpretation code of value v (in
// the measure's unit): critical bands first, then low and high.
func (l Limits) Interpret(v float64) string {
	switch {
	case l.CriticalLow.Breached(v):
		return CriticalLow
	case l.CriticalHigh.Breached(v):
		return CriticalHigh
	case l.Low.Breached(v):
		return Low
	case l.High.Breached(v):
		return High
	}
	return Normal
}

// Thresholds is the loaded data file: the measures and an index by code.
type Thresholds struct {
	measures []*Measure
	byCode   map[string]*Measure
}

// Defaults parses the embedded thresholds.json.
func Defaults() (*Thresholds, error) { return ParseThresholds(defaultThresholds) }

// ParseThresholds reads a thresholds file (the form of thresholds.json)
// and checks it: known rule kinds, bands that point the right way, a
// normal range that the bands call N, no code claimed twice.
func ParseThresholds(data []byte) (*Thresholds, error) {
	var f struct {
		About    []string   `json:"about"`
		Measures []*Measure `json:"measures"`
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&f); err != nil {
		return nil, fmt.Errorf("thresholds: %w", err)
	}
	t := &Thresholds{byCode: map[string]*Measure{}}
	keys := map[string]bool{}
	for _, m := range f.Measures {
		if err := m.check(); err != nil {
			return nil, fmt.Errorf("thresholds: measure %q: %w", m.Key, err)
		}
		if keys[m.Key] {
			return nil, fmt.Errorf("thresholds: measure %q listed twice", m.Key)
		}
		keys[m.Key] = true
		for _, c := range m.Codes {
			if o := t.byCode[c]; o != nil {
				return nil, fmt.Errorf("thresholds: code %s is in both %q and %q", c, o.Key, m.Key)
			}
			t.byCode[c] = m
		}
		t.measures = append(t.measures, m)
	}
	if len(t.measures) == 0 {
		return nil, errors.New("thresholds: no measures")
	}
	return t, nil
}

func (m *Measure) check() error {
	if m.Key == "" || !validKey(m.Key) {
		return errors.New("key must be lower-case letters, digits and '-'")
	}
	if len(m.Codes) == 0 || m.Unit == "" {
		return errors.New("codes and unit are required")
	}
	for u, c := range m.Units {
		if !(c.Scale > 0) || u == m.Unit {
			return fmt.Errorf("unit %q: scale must be positive and differ from the base unit", u)
		}
	}
	for _, b := range []struct {
		name  string
		b     *Bound
		lower bool
	}{{"low", m.Low, true}, {"criticalLow", m.CriticalLow, true}, {"high", m.High, false}, {"criticalHigh", m.CriticalHigh, false}} {
		if err := b.b.check(b.name, b.lower); err != nil {
			return err
		}
	}
	if m.Interpreted() && m.Normal == nil {
		return errors.New("a measure with bands needs a normal range")
	}
	if m.Normal != nil {
		l := m.Defaults()
		for _, v := range []*float64{m.Normal.Low, m.Normal.High} {
			if v != nil && l.Interpret(*v) != Normal {
				return fmt.Errorf("normal range bound %v is itself interpreted %s", *v, l.Interpret(*v))
			}
		}
	}
	return m.Rule.check()
}

func validKey(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return len(s) <= 20
}

// Measures lists the measures in file order.
func (t *Thresholds) Measures() []*Measure { return t.measures }

// ByCode returns the measure a LOINC code belongs to.
func (t *Thresholds) ByCode(code string) (*Measure, bool) {
	m, ok := t.byCode[code]
	return m, ok
}

// ByKey returns the measure with that key.
func (t *Thresholds) ByKey(key string) (*Measure, bool) {
	for _, m := range t.measures {
		if m.Key == key {
			return m, true
		}
	}
	return nil, false
}

func trimFloat(v float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.4f", v), "0"), ".")
}
