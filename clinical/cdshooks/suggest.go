package cdshooks

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/anodyne-fhir/anodyne/clinical/opioid"
)

// Suggestions of the opioid-mme service (CDS Hooks 2.0 card.suggestions):
//
//   - co-prescribe naloxone: a create action with a draft MedicationRequest
//     for the rescue product of naloxone.json, when the projected total is
//     50 MME/day or more or an opioid would overlap a benzodiazepine, and
//     the patient has no naloxone among the active and draft orders;
//   - lower the draft: an update action with the selected opioid draft
//     whose dose or interval is reduced so that the projected total falls
//     below the threshold it crosses (90, else 50). The candidate doses are
//     whole units (tablets) down to one, or quarters of a mass dose; the
//     intervals are the draft's, then 6, 8, 12 and 24 hours; the frequency
//     the draft's down to once. Of the candidates whose MME the table
//     computes completely, the highest under the threshold wins (the
//     earliest, which keeps the interval shortest and the dose largest,
//     on a tie). The MME of a candidate is computed by clinical/opioid,
//     as any order's is.

//go:embed naloxone.json
var naloxoneJSON []byte

//go:embed override-reasons.json
var overrideJSON []byte

// loadOverrideReasons reads override-reasons.json.
func loadOverrideReasons() ([]Coding, error) {
	var f struct {
		System  string   `json:"system"`
		Reasons []Coding `json:"reasons"`
	}
	if err := json.Unmarshal(overrideJSON, &f); err != nil {
		return nil, fmt.Errorf("cds hooks: override-reasons.json: %w", err)
	}
	if f.System == "" || len(f.Reasons) == 0 {
		return nil, fmt.Errorf("cds hooks: override-reasons.json lacks a system or reasons")
	}
	for i := range f.Reasons {
		if f.Reasons[i].Code == "" {
			return nil, fmt.Errorf("cds hooks: override-reasons.json: reason %d has no code", i)
		}
		f.Reasons[i].System = f.System
	}
	return f.Reasons, nil
}

// naloxoneSpec is naloxone.json.
type naloxoneSpec struct {
	Medication       map[string]any `json:"medication"`
	Dosage           map[string]any `json:"dosage"`
	DispenseQuantity map[string]any `json:"dispenseQuantity"`
	RescueCodes      []string       `json:"rescueCodes"`
	Names            []string       `json:"names"`
	NotWith          []string       `json:"notWith"`
}

func loadNaloxone() (*naloxoneSpec, error) {
	var n naloxoneSpec
	if err := json.Unmarshal(naloxoneJSON, &n); err != nil {
		return nil, fmt.Errorf("cds hooks: naloxone.json: %w", err)
	}
	if n.Medication == nil || n.Dosage == nil || len(n.RescueCodes) == 0 {
		return nil, fmt.Errorf("cds hooks: naloxone.json lacks medication, dosage or rescueCodes")
	}
	return &n, nil
}

// Suggestion is a CDS Hooks suggestion.
type Suggestion struct {
	Label         string   `json:"label"`
	UUID          string   `json:"uuid"`
	IsRecommended bool     `json:"isRecommended,omitempty"`
	Actions       []Action `json:"actions"`
}

// Action is one change a suggestion proposes.
type Action struct {
	Type        string         `json:"type"` // create, update, delete
	Description string         `json:"description"`
	Resource    map[string]any `json:"resource,omitempty"`
}

// isRescue reports whether a request is for rescue naloxone.
func (n *naloxoneSpec) isRescue(req map[string]any, name string) bool {
	cc, _ := req["medicationCodeableConcept"].(map[string]any)
	list, _ := cc["coding"].([]any)
	for _, c := range list {
		cm, _ := c.(map[string]any)
		if cm["system"] == opioid.RxNorm && contains(n.RescueCodes, fmt.Sprint(cm["code"])) {
			return true
		}
	}
	text := strings.ToLower(name)
	if t, _ := cc["text"].(string); t != "" {
		text += " " + strings.ToLower(t)
	}
	for _, x := range n.NotWith {
		if strings.Contains(text, x) {
			return false
		}
	}
	for _, x := range n.Names {
		if strings.Contains(text, x) {
			return true
		}
	}
	return false
}

// naloxoneOrder is the draft rescue order for the patient.
func (n *naloxoneSpec) order(oc *orderContext) map[string]any {
	mr := map[string]any{
		"resourceType":              "MedicationRequest",
		"status":                    "draft",
		"intent":                    "order",
		"subject":                   map[string]any{"reference": "Patient/" + oc.PatientID},
		"medicationCodeableConcept": deepCopy(n.Medication),
		"reasonCode":                []any{map[string]any{"text": "Opioid overdose rescue, offered with opioids at 50 MME/day or more or with a benzodiazepine (CDC 2022)"}},
		"dosageInstruction":         []any{deepCopy(n.Dosage)},
	}
	if n.DispenseQuantity != nil {
		mr["dispenseRequest"] = map[string]any{"quantity": deepCopy(n.DispenseQuantity)}
	}
	if ref := practitionerRef(oc.UserID); ref != "" {
		mr["requester"] = map[string]any{"reference": ref}
	}
	if oc.EncounterID != "" {
		mr["encounter"] = map[string]any{"reference": "Encounter/" + oc.EncounterID}
	}
	return mr
}

// practitionerRef is context.userId when it names a prescriber.
func practitionerRef(userID string) string {
	typ, id, ok := strings.Cut(userID, "/")
	if !ok || id == "" || strings.ContainsAny(id, "/?#") {
		return ""
	}
	switch typ {
	case "Practitioner", "PractitionerRole":
		return userID
	}
	return ""
}

// taper returns the draft lowered so that others + its MME is below
// limit, with its MME; ok false when no candidate gets there.
func taper(t *opioid.Table, d draft, others, limit float64, resolve opioid.Resolver) (map[string]any, opioid.Result, bool) {
	if id, _ := d.res["id"].(string); id == "" {
		return nil, opioid.Result{}, false // an update needs the draft's id
	}
	dis, _ := d.res["dosageInstruction"].([]any)
	if len(dis) != 1 {
		return nil, opioid.Result{}, false // a taper in sequences is the prescriber's design
	}
	di, _ := dis[0].(map[string]any)
	rep, _ := mapAt(di, "timing", "repeat")
	dars, _ := di["doseAndRate"].([]any)
	if rep == nil || len(dars) != 1 {
		return nil, opioid.Result{}, false
	}
	dq, _ := mapAt(dars[0].(map[string]any), "doseQuantity")
	dose, ok1 := num(dq["value"])
	period, ok2 := num(rep["period"])
	freq, ok3 := num(rep["frequency"])
	if !ok3 {
		freq, ok3 = 1, true
	}
	if dq == nil || !ok1 || !ok2 || dose <= 0 || period <= 0 || freq < 1 || rep["frequencyMax"] != nil || rep["periodMax"] != nil {
		return nil, opioid.Result{}, false
	}
	periodUnit, _ := rep["periodUnit"].(string)
	periods := []float64{period}
	if periodUnit == "h" {
		for _, p := range []float64{6, 8, 12, 24} {
			if p > period {
				periods = append(periods, p)
			}
		}
	}
	var doses []float64
	if dose == float64(int(dose)) && !isMass(dq) {
		for v := dose; v >= 1; v-- {
			doses = append(doses, v)
		}
	} else {
		for _, f := range []float64{1, 0.75, 0.5, 0.25} {
			doses = append(doses, dose*f)
		}
	}
	var best map[string]any
	var bestRes opioid.Result
	for _, p := range periods {
		for f := freq; f >= 1; f-- {
			for _, v := range doses {
				c := deepCopy(d.res).(map[string]any)
				cdi := c["dosageInstruction"].([]any)[0].(map[string]any)
				crep, _ := mapAt(cdi, "timing", "repeat")
				crep["period"], crep["frequency"] = p, f
				cdq, _ := mapAt(cdi["doseAndRate"].([]any)[0].(map[string]any), "doseQuantity")
				cdq["value"] = v
				r := t.Compute(c, resolve)
				if !r.Complete() || !r.Opioid || others+r.MME >= limit {
					continue
				}
				if best == nil || r.MME > bestRes.MME {
					best, bestRes = c, r
				}
			}
		}
	}
	if best == nil {
		return nil, opioid.Result{}, false
	}
	bdi := best["dosageInstruction"].([]any)[0].(map[string]any)
	brep, _ := mapAt(bdi, "timing", "repeat")
	bdq, _ := mapAt(bdi["doseAndRate"].([]any)[0].(map[string]any), "doseQuantity")
	bdi["text"] = doseText(bdq, brep)
	note := map[string]any{"text": fmt.Sprintf("Dose lowered from %s to %s MME/day on the advice of the opioid-mme CDS service, to keep the total below %v MME/day (CDC 2022).",
		opioid.Format(d.result.MME), opioid.Format(bestRes.MME), limit)}
	notes, _ := best["note"].([]any)
	best["note"] = append(notes, note)
	return best, bestRes, true
}

func doseText(dq, rep map[string]any) string {
	v, _ := num(dq["value"])
	u, _ := dq["unit"].(string)
	if u == "" {
		u, _ = dq["code"].(string)
	}
	f, _ := num(rep["frequency"])
	p, _ := num(rep["period"])
	pu, _ := rep["periodUnit"].(string)
	times := ""
	if f > 1 {
		times = fmt.Sprintf(" %s times", opioid.Format(f))
	}
	return strings.TrimSpace(fmt.Sprintf("%s %s%s every %s %s", opioid.Format(v), u, times, opioid.Format(p), pu))
}

func isMass(q map[string]any) bool {
	for _, k := range []string{"code", "unit"} {
		switch strings.ToLower(fmt.Sprint(q[k])) {
		case "mg", "g", "ug", "mcg", "ml":
			return true
		}
	}
	return false
}

func mapAt(m map[string]any, keys ...string) (map[string]any, bool) {
	cur := m
	for _, k := range keys {
		next, ok := cur[k].(map[string]any)
		if !ok {
			return nil, false
		}
		cur = next
	}
	return cur, true
}

func num(v any) (float64, bool) {
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case float64:
		return n, true
	case int:
		return float64(n), true
	}
	return 0, false
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

func newSuggestion(label string, recommended bool, a Action) Suggestion {
	return Suggestion{Label: label, UUID: uuid.NewString(), IsRecommended: recommended, Actions: []Action{a}}
}
