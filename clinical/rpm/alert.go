package rpm

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"
)

// Extensions and code systems of the alert resources (all from R4 core).
const (
	// FlagDetailURL links a Flag to each reading that makes its breach
	// (core extension flag-detail, valueReference); Flag has no element
	// of its own for evidence.
	FlagDetailURL   = "http://hl7.org/fhir/StructureDefinition/flag-detail"
	flagPriorityURL = "http://hl7.org/fhir/StructureDefinition/flag-priority"
	flagPrioritySys = "http://hl7.org/fhir/flag-priority-code"
	flagCategorySys = "http://terminology.hl7.org/CodeSystem/flag-category"
)

// FlagFor is the Flag of a patient's measure after res, given the stored
// one (nil when none): active with the evidence while the breach lasts;
// on recovery inactive, keeping the episode's evidence, with period.end
// at the reading that ended it. It returns nil when there is nothing to
// store (no breach and no Flag yet).
func FlagFor(m *Measure, patient string, res Result, cur map[string]any) map[string]any {
	wasActive := cur != nil && cur["status"] == "active"
	if !res.Active && !wasActive {
		return cur // nothing new: an inactive Flag stays as it is
	}
	f := map[string]any{
		"resourceType": "Flag",
		"id":           AlertID(m, patient),
		"category": []any{map[string]any{"coding": []any{map[string]any{
			"system": flagCategorySys, "code": "clinical", "display": "Clinical"}}}},
		"subject": map[string]any{"reference": "Patient/" + patient},
	}
	rule := m.Rule.Describe(m.Unit)
	if res.Active {
		start := res.Evidence[0].EffectiveText
		if wasActive {
			if s, _ := asMap(cur["period"])["start"].(string); s != "" {
				start = s
			}
		}
		priority, pdisplay := "PM", "Medium priority"
		if res.Critical {
			priority, pdisplay = "PH", "High priority"
		}
		ext := []any{map[string]any{"url": flagPriorityURL, "valueCodeableConcept": map[string]any{
			"coding": []any{map[string]any{"system": flagPrioritySys, "code": priority, "display": pdisplay}}}}}
		for _, e := range res.Evidence {
			ext = append(ext, map[string]any{"url": FlagDetailURL, "valueReference": map[string]any{"reference": e.Ref}})
		}
		f["extension"] = ext
		f["status"] = "active"
		f["period"] = map[string]any{"start": start}
		f["code"] = alertCode(m, fmt.Sprintf("%s out of range: %s", m.Display, rule))
		return f
	}
	// Recovery: keep the episode's evidence and start, close the period.
	copyIfSet(f, cur, "extension")
	f["status"] = "inactive"
	period := maps.Clone(asMap(cur["period"]))
	if period == nil {
		period = map[string]any{}
	}
	period["end"] = res.Latest.EffectiveText
	f["period"] = period
	f["code"] = alertCode(m, fmt.Sprintf("%s back in range (alert rule: %s)", m.Display, rule))
	return f
}

func alertCode(m *Measure, text string) map[string]any {
	return map[string]any{
		"coding": []any{map[string]any{"system": LOINC, "code": m.Codes[0], "display": m.Display}},
		"text":   text,
	}
}

// DetectedIssueFor is the DetectedIssue of a patient's measure after res,
// given the stored one: raised (severity high) while the breach is
// sustained by critical readings, with identifiedPeriod.end set once it
// no longer is. nil when there is nothing to store.
func DetectedIssueFor(m *Measure, patient string, res Result, cur map[string]any) map[string]any {
	open := cur != nil && asMap(cur["identifiedPeriod"])["end"] == nil
	if !res.Critical && !open {
		return cur
	}
	id := AlertID(m, patient)
	di := map[string]any{
		"resourceType": "DetectedIssue",
		"id":           id,
		"status":       "final",
		"severity":     "high",
		"patient":      map[string]any{"reference": "Patient/" + patient},
		"evidence":     []any{map[string]any{"detail": []any{map[string]any{"reference": "Flag/" + id}}}},
	}
	if res.Critical {
		start := res.Evidence[0].EffectiveText
		if open {
			if s, _ := asMap(cur["identifiedPeriod"])["start"].(string); s != "" {
				start = s
			}
		}
		var implicated, values []string
		for _, e := range res.Evidence {
			implicated = append(implicated, e.Ref)
			values = append(values, fmt.Sprintf("%s %s at %s (%s)", trimFloat(e.Value), m.Unit, e.EffectiveText, e.Interpretation))
		}
		di["identifiedPeriod"] = map[string]any{"start": start}
		di["implicated"] = refs(implicated)
		di["code"] = alertCode(m, "Sustained critical "+strings.ToLower(m.Display))
		di["detail"] = fmt.Sprintf("%s is critically out of range in %s: %s.", m.Display, m.Rule.Describe(m.Unit), strings.Join(values, "; "))
		return di
	}
	period := maps.Clone(asMap(cur["identifiedPeriod"]))
	if period == nil {
		period = map[string]any{}
	}
	period["end"] = res.Latest.EffectiveText
	di["identifiedPeriod"] = period
	copyIfSet(di, cur, "implicated", "code")
	di["detail"] = fmt.Sprintf("%s no longer critically out of range as of %s.", m.Display, res.Latest.EffectiveText)
	return di
}

// copyIfSet carries elements of the stored version over (never as null).
func copyIfSet(dst, src map[string]any, keys ...string) {
	for _, k := range keys {
		if v, ok := src[k]; ok && v != nil {
			dst[k] = v
		}
	}
}

func refs(list []string) []any {
	out := make([]any, len(list))
	for i, r := range list {
		out[i] = map[string]any{"reference": r}
	}
	return out
}

// sameContent compares a resource we would write with the stored one,
// meta aside (json.Marshal sorts keys, so equal content is equal text).
func sameContent(want, cur map[string]any) bool {
	if cur == nil {
		return false
	}
	strip := func(m map[string]any) ([]byte, error) {
		c := maps.Clone(m)
		delete(c, "meta")
		for k, v := range c {
			if v == nil {
				delete(c, k)
			}
		}
		return json.Marshal(c)
	}
	a, err1 := strip(want)
	b, err2 := strip(cur)
	return err1 == nil && err2 == nil && string(a) == string(b)
}
