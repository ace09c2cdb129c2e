package rpm

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Part is one place of an Observation that carries a measure: the
// Observation itself (Component -1) or one of its components (a blood
// pressure panel carries systolic and diastolic).
type Part struct {
	Measure   *Measure
	Component int
	Value     float64 // in the measure's unit; meaningful when HasValue
	HasValue  bool
	Unit      string // the reading's UCUM code, for the referenceRange
}

// Parts finds the measures an Observation carries, by LOINC code of the
// Observation and of each component. A value in a unit the measure does
// not know gives a Part without value (it is neither interpreted nor
// counted, rather than guessed).
func (t *Thresholds) Parts(obs map[string]any) []Part {
	var out []Part
	if m := t.codeOf(obs["code"]); m != nil {
		out = append(out, partOf(m, obs, -1))
	}
	comps, _ := obs["component"].([]any)
	for i, c := range comps {
		cm, _ := c.(map[string]any)
		if m := t.codeOf(cm["code"]); m != nil {
			out = append(out, partOf(m, cm, i))
		}
	}
	return out
}

func (t *Thresholds) codeOf(cc any) *Measure {
	codings, _ := asMap(cc)["coding"].([]any)
	for _, c := range codings {
		cm := asMap(c)
		if sys, _ := cm["system"].(string); sys != LOINC {
			continue
		}
		if code, _ := cm["code"].(string); code != "" {
			if m, ok := t.byCode[code]; ok {
				return m
			}
		}
	}
	return nil
}

func partOf(m *Measure, holder map[string]any, comp int) Part {
	p := Part{Measure: m, Component: comp}
	if v, ok := number(holder["valueInteger"]); ok {
		p.Value, p.HasValue, p.Unit = v, true, m.Unit
		return p
	}
	q := asMap(holder["valueQuantity"])
	v, ok := number(q["value"])
	if !ok {
		return p
	}
	if sys, _ := q["system"].(string); sys != "" && sys != UCUM {
		return p
	}
	unit, _ := q["code"].(string)
	if unit == "" {
		unit, _ = q["unit"].(string)
	}
	if unit == "" && m.Unit == "{score}" {
		unit = m.Unit // a score carries no unit of its own
	}
	base, ok := m.ToBase(v, unit)
	if !ok {
		return p
	}
	p.Value, p.HasValue, p.Unit = base, true, unit
	return p
}

// LimitsFunc gives the limits in force for a measure (defaults or a
// patient's Goal).
type LimitsFunc func(*Measure) Limits

// DerivedURL marks the interpretation and referenceRange this package
// wrote (valueString: the thresholds used, "defaults" or "Goal/<id>"), so
// that a client that reads a reading, changes its value and writes it
// back does not keep a stale interpretation as if it were its own.
const DerivedURL = "http://anodyne-fhir.org/fhir/StructureDefinition/rpm-derived"

// Enrich sets interpretation and referenceRange on every interpreted part
// of obs that lacks them or carries ours (a sender's own values are
// kept), and on a panel whose own code is no measure (blood pressure) the
// Observation's interpretation from its most severe component. It
// reports whether obs changed.
func Enrich(obs map[string]any, parts []Part, limits LimitsFunc) bool {
	changed := false
	set := func(holder map[string]any, key string, v any) {
		if cur, ok := holder[key]; ok && !derived(cur) {
			return // the sender's
		} else if ok && jsonEqual(cur, v) {
			return
		}
		holder[key] = v
		changed = true
	}
	comps, _ := obs["component"].([]any)
	ownPart := false
	for _, p := range parts {
		if !p.HasValue || !p.Measure.Interpreted() {
			continue
		}
		holder := obs
		if p.Component >= 0 {
			holder = asMap(comps[p.Component])
		} else {
			ownPart = true
		}
		l := limits(p.Measure)
		set(holder, "interpretation", []any{interpretationConcept(l.Interpret(p.Value), l.source())})
		set(holder, "referenceRange", []any{ReferenceRange(p.Measure, l, p.Unit)})
	}
	if !ownPart {
		worst, src := "", ""
		for _, p := range parts {
			if p.Component < 0 {
				continue
			}
			comp := asMap(comps[p.Component])
			if c := interpretationCode(comp); severity(c) > severity(worst) {
				worst, src = c, derivedSource(comp["interpretation"])
			}
		}
		if worst != "" {
			set(obs, "interpretation", []any{interpretationConcept(worst, src)})
		}
	}
	return changed
}

func (l Limits) source() string {
	if l.Source == "" {
		return "defaults"
	}
	return l.Source
}

func derivedMark(source string) []any {
	if source == "" {
		source = "sender"
	}
	return []any{map[string]any{"url": DerivedURL, "valueString": source}}
}

// derived reports whether every element of a list carries our mark.
func derived(v any) bool {
	list, _ := v.([]any)
	for _, e := range list {
		if derivedSource([]any{e}) == "" {
			return false
		}
	}
	return len(list) > 0
}

// derivedSource is the thresholds named by our mark on the first element.
func derivedSource(v any) string {
	list, _ := v.([]any)
	if len(list) == 0 {
		return ""
	}
	exts, _ := asMap(list[0])["extension"].([]any)
	for _, e := range exts {
		if em := asMap(e); em["url"] == DerivedURL {
			s, _ := em["valueString"].(string)
			return s
		}
	}
	return ""
}

func jsonEqual(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

var interpretationDisplay = map[string]string{
	Normal: "Normal", High: "High", Low: "Low", CriticalHigh: "Critical high", CriticalLow: "Critical low",
	"A": "Abnormal", "AA": "Critical abnormal", "HU": "Significantly high", "LU": "Significantly low",
	"<": "Off scale low", ">": "Off scale high",
}

func interpretationConcept(code, source string) map[string]any {
	return map[string]any{"extension": derivedMark(source), "coding": []any{map[string]any{
		"system": Interpretation, "code": code, "display": interpretationDisplay[code],
	}}}
}

// severity orders interpretation codes: 0 unknown, 1 normal, 2 abnormal,
// 3 critical. The codes that count as abnormal and critical are the
// v3-ObservationInterpretation codes for a value outside its range.
func severity(code string) int {
	switch code {
	case Normal:
		return 1
	case High, Low, "A", "HU", "LU", "<", ">":
		return 2
	case CriticalHigh, CriticalLow, "AA":
		return 3
	}
	return 0
}

// interpretationCode is the first v3-ObservationInterpretation code of an
// Observation or component, "" when none.
func interpretationCode(holder map[string]any) string {
	list, _ := holder["interpretation"].([]any)
	for _, cc := range list {
		codings, _ := asMap(cc)["coding"].([]any)
		for _, c := range codings {
			cm := asMap(c)
			if sys, _ := cm["system"].(string); sys == Interpretation {
				code, _ := cm["code"].(string)
				return code
			}
		}
	}
	return ""
}

// ReferenceRange is the referenceRange element for limits, in the
// reading's unit, with a text that states the bands exactly (a FHIR
// range is inclusive; "<= 70 is low" cannot be written as numbers alone).
func ReferenceRange(m *Measure, l Limits, unit string) map[string]any {
	rr := map[string]any{"extension": derivedMark(l.source())}
	qty := func(v float64) map[string]any {
		return map[string]any{"value": json.Number(trimFloat(m.FromBase(v, unit))), "unit": unit, "system": UCUM, "code": unit}
	}
	if l.Normal.Low != nil {
		rr["low"] = qty(*l.Normal.Low)
	}
	if l.Normal.High != nil {
		rr["high"] = qty(*l.Normal.High)
	}
	meaning, display := "normal", "Normal Range"
	if l.Source != "" {
		meaning, display = "recommended", "Recommended Range"
	}
	rr["type"] = map[string]any{"coding": []any{map[string]any{"system": rangeMeaning, "code": meaning, "display": display}}}
	var parts []string
	for _, b := range []struct {
		name string
		b    *Bound
	}{{"low", l.Low}, {"high", l.High}, {"critical low", l.CriticalLow}, {"critical high", l.CriticalHigh}} {
		if b.b != nil {
			parts = append(parts, fmt.Sprintf("%s if %s %s %s", b.name, b.b.Op, trimFloat(m.FromBase(b.b.Value, unit)), unit))
		}
	}
	src := "default thresholds: " + m.Source
	if l.Source != "" {
		src = "care team target " + l.Source
	}
	rr["text"] = strings.Join(parts, "; ") + " (" + src + ")"
	return rr
}

// Reading is one reading of a measure, as the rules see it.
type Reading struct {
	Ref            string // "Observation/<id>"
	Effective      time.Time
	EffectiveText  string // as written, for Flag periods
	Value          float64
	HasValue       bool
	Interpretation string // v3 code on the reading ("" when none)
}

// countedStatus are the Observation statuses whose readings count; a
// reading entered in error or cancelled no longer does.
var countedStatus = []string{"final", "amended", "corrected", "preliminary"}

// ReadingOf is the reading of measure m in a stored Observation, false
// when obs does not carry m, has no effective time or a status that does
// not count.
func (t *Thresholds) ReadingOf(ref string, obs map[string]any, m *Measure) (Reading, bool) {
	status, _ := obs["status"].(string)
	if !slices.Contains(countedStatus, status) {
		return Reading{}, false
	}
	eff, text, ok := effective(obs)
	if !ok {
		return Reading{}, false
	}
	comps, _ := obs["component"].([]any)
	for _, p := range t.Parts(obs) {
		if p.Measure != m {
			continue
		}
		holder := obs
		if p.Component >= 0 {
			holder = asMap(comps[p.Component])
		}
		return Reading{Ref: ref, Effective: eff, EffectiveText: text, Value: p.Value, HasValue: p.HasValue,
			Interpretation: interpretationCode(holder)}, true
	}
	return Reading{}, false
}

// effective is the start of Observation.effective[x].
func effective(obs map[string]any) (time.Time, string, bool) {
	s, _ := obs["effectiveDateTime"].(string)
	if s == "" {
		s, _ = obs["effectiveInstant"].(string)
	}
	if s == "" {
		s, _ = asMap(obs["effectivePeriod"])["start"].(string)
	}
	if s == "" {
		return time.Time{}, "", false
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02", "2006-01", "2006"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, s, true
		}
	}
	return time.Time{}, "", false
}

// SubjectPatient is the id of the Patient an Observation (or Goal,
// CarePlan) is about, "" when its subject is no local Patient reference.
func SubjectPatient(res map[string]any) string {
	ref, _ := asMap(res["subject"])["reference"].(string)
	id, ok := strings.CutPrefix(ref, "Patient/")
	if !ok || id == "" || strings.Contains(id, "/") {
		return ""
	}
	return id
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case float64:
		return x, true
	case string:
		return 0, false
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	}
	return 0, false
}
