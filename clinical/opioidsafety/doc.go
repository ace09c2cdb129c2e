// Package opioidsafety puts the opioid arithmetic of clinical/opioid to
// work in the server: a fhir.CommitObserver that records each
// MedicationRequest's MME/day on it and keeps the patient's opioid
// DetectedIssues current in the same Commit, and the Patient $mme
// operation (a fhir.PatientOperation). The CDS Hooks opioid-mme service
// is clinical/cdshooks.
//
// It owns what is recorded (the extension, the DetectedIssue ids, codes
// and statuses) and when an alert is raised; the MME of one request and
// the thresholds belong to clinical/opioid. It reads patient data only
// through what fhir hands it (CommitSet.Backend in the write path, a
// fhir.PatientReader carrying the caller's authorization elsewhere) and
// must not know tokens, scopes or storage backends.
package opioidsafety

import (
	"encoding/json"
	"strings"

	"github.com/anodyne-fhir/anodyne/clinical/opioid"
)

// Base is the canonical base of what this package publishes.
const Base = "http://anodyne-fhir.org/fhir"

// ExtensionURL is the extension recorded on every MedicationRequest that
// matters to opioid safety (see README "Opioid safety"): sub-extensions
// mmePerDay (valueDecimal), contributor (ingredient valueCoding,
// dailyDose valueQuantity mg/d or ug/h, factor and mme valueDecimal,
// excluded valueString), benzodiazepine (valueBoolean), notComputed
// (valueString, one per reason) and patientTotal (valueDecimal: the
// patient's total active MME/day as of this version).
const ExtensionURL = Base + "/StructureDefinition/opioid-mme"

const ucum = "http://unitsofmeasure.org"

func decimal(v float64) json.Number { return json.Number(opioid.Format(v)) }

// annotate returns req with its opioid extension replaced by one for r
// (none when r does not matter to opioid safety). A client-supplied
// extension with our URL is always dropped: only the server writes it.
func annotate(req map[string]any, r opioid.Result, total float64) map[string]any {
	out := make(map[string]any, len(req)+1)
	for k, v := range req {
		out[k] = v
	}
	var exts []any
	list, _ := req["extension"].([]any)
	for _, e := range list {
		if m, ok := e.(map[string]any); ok && m["url"] == ExtensionURL {
			continue
		}
		exts = append(exts, e)
	}
	if r.Relevant() {
		var sub []any
		if r.Opioid {
			sub = append(sub, map[string]any{"url": "mmePerDay", "valueDecimal": decimal(r.MME)})
		}
		for _, c := range r.Contributors {
			sub = append(sub, map[string]any{"url": "contributor", "extension": contributorExt(c)})
		}
		if r.Benzodiazepine {
			sub = append(sub, map[string]any{"url": "benzodiazepine", "valueBoolean": true})
		}
		for _, why := range r.Reasons {
			sub = append(sub, map[string]any{"url": "notComputed", "valueString": why})
		}
		sub = append(sub, map[string]any{"url": "patientTotal", "valueDecimal": decimal(total)})
		exts = append(exts, map[string]any{"url": ExtensionURL, "extension": sub})
	}
	if len(exts) == 0 {
		delete(out, "extension")
	} else {
		out["extension"] = exts
	}
	return out
}

func contributorExt(c opioid.Contributor) []any {
	out := []any{
		map[string]any{"url": "ingredient", "valueCoding": map[string]any{"system": opioid.RxNorm, "code": c.Ingredient, "display": c.Name}},
		map[string]any{"url": "dailyDose", "valueQuantity": dailyDose(c)},
		map[string]any{"url": "factor", "valueDecimal": decimal(c.Factor)},
		map[string]any{"url": "mme", "valueDecimal": decimal(c.MME)},
	}
	if c.Excluded != "" {
		out = append(out, map[string]any{"url": "excluded", "valueString": c.Excluded})
	}
	return out
}

func dailyDose(c opioid.Contributor) map[string]any {
	if c.Unit == "mcg/hr" {
		return map[string]any{"value": decimal(c.DailyDose), "unit": "mcg/hr", "system": ucum, "code": "ug/h"}
	}
	return map[string]any{"value": decimal(c.DailyDose), "unit": "mg/day", "system": ucum, "code": "mg/d"}
}

// patientOf returns the id of a request's subject Patient ("" when the
// subject is not a local Patient reference).
func patientOf(req map[string]any) string {
	subj, _ := req["subject"].(map[string]any)
	ref, _ := subj["reference"].(string)
	id, ok := strings.CutPrefix(ref, "Patient/")
	if !ok {
		return ""
	}
	id, _, _ = strings.Cut(id, "/") // Patient/x/_history/2
	return id
}

// medicationText names a request for people.
func medicationText(r opioid.Request) string {
	if r.Result.Medication != "" {
		return r.Result.Medication
	}
	return r.Ref
}
