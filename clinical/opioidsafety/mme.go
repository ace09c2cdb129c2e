package opioidsafety

import (
	"context"
	"net/url"

	"github.com/anodyne-fhir/anodyne/clinical/opioid"
	"github.com/anodyne-fhir/anodyne/fhir"
)

// OperationDefinitionID is where $mme's definition is published.
const OperationDefinitionID = "Patient-mme"

// MMEOperation is GET [base]/Patient/{id}/$mme: the patient's current
// total MME/day over the active MedicationRequests the caller may see,
// each contributor, and what could not be computed and why.
func MMEOperation(t *opioid.Table) fhir.PatientOperation {
	return fhir.PatientOperation{
		Name:       "mme",
		Definition: operationDefinition(),
		Run: func(ctx context.Context, r *fhir.PatientReader, params url.Values) (map[string]any, error) {
			for k := range params {
				return nil, fhir.OperationError(400, "$mme takes no parameter %q", k)
			}
			reqs, err := patientRequests(ctx, t, r, nil)
			if err != nil {
				return nil, err
			}
			return parameters(opioid.Summarize(reqs), reqs), nil
		},
	}
}

// patientRequests computes the patient's active MedicationRequests that
// the caller may read, plus drafts (CDS Hooks draft orders, not stored).
func patientRequests(ctx context.Context, t *opioid.Table, r *fhir.PatientReader, drafts []opioid.Request) ([]opioid.Request, error) {
	list, err := r.Search(ctx, "MedicationRequest", url.Values{"status": {"active"}})
	if err != nil {
		return nil, err
	}
	resolve := func(ref string) (map[string]any, error) { return r.Read(ctx, ref) }
	var out []opioid.Request
	for _, res := range list {
		id, _ := res["id"].(string)
		out = append(out, opioid.Request{Ref: "MedicationRequest/" + id, Result: t.Compute(res, resolve)})
	}
	return append(out, drafts...), nil
}

// parameters is the $mme answer.
func parameters(s opioid.Summary, reqs []opioid.Request) map[string]any {
	level := map[opioid.Level]string{opioid.LevelBelow: "below-50", opioid.LevelReassess: "50-89", opioid.LevelHigh: "90-or-more"}[s.Level()]
	ps := []any{
		map[string]any{"name": "total", "valueDecimal": decimal(s.MME)},
		map[string]any{"name": "level", "valueCode": level},
		map[string]any{"name": "benzodiazepineOverlap", "valueBoolean": s.Overlap()},
	}
	ref := func(r opioid.Request) map[string]any {
		return map[string]any{"name": "medicationRequest", "valueReference": map[string]any{"reference": r.Ref, "display": medicationText(r)}}
	}
	for _, r := range reqs {
		for _, c := range r.Result.Contributors {
			part := []any{
				ref(r),
				map[string]any{"name": "ingredient", "valueCoding": map[string]any{"system": opioid.RxNorm, "code": c.Ingredient, "display": c.Name}},
				map[string]any{"name": "dailyDose", "valueQuantity": dailyDose(c)},
				map[string]any{"name": "factor", "valueDecimal": decimal(c.Factor)},
				map[string]any{"name": "mme", "valueDecimal": decimal(c.MME)},
			}
			if c.Excluded != "" {
				part = append(part, map[string]any{"name": "excluded", "valueString": c.Excluded})
			}
			ps = append(ps, map[string]any{"name": "contributor", "part": part})
		}
		for _, why := range r.Result.Reasons {
			ps = append(ps, map[string]any{"name": "notComputed", "part": []any{ref(r), map[string]any{"name": "reason", "valueString": why}}})
		}
		if r.Result.Benzodiazepine {
			ps = append(ps, map[string]any{"name": "benzodiazepine", "part": []any{ref(r)}})
		}
	}
	return map[string]any{"resourceType": "Parameters", "parameter": ps}
}

func operationDefinition() map[string]any {
	out := func(name string, min int, max, typ, doc string, parts ...any) map[string]any {
		p := map[string]any{"name": name, "use": "out", "min": min, "max": max, "documentation": doc}
		if typ != "" {
			p["type"] = typ
		}
		if len(parts) > 0 {
			p["part"] = parts
		}
		return p
	}
	reqPart := out("medicationRequest", 1, "1", "Reference", "The MedicationRequest")
	return map[string]any{
		"resourceType": "OperationDefinition",
		"id":           OperationDefinitionID,
		"url":          Base + "/OperationDefinition/" + OperationDefinitionID,
		"version":      "1.0.0",
		"name":         "PatientMME",
		"title":        "Morphine milligram equivalents per day of a patient",
		"status":       "active",
		"kind":         "operation",
		"publisher":    "Anodyne",
		"description": "The patient's current total morphine milligram equivalents per day (MME/day) over the active MedicationRequests the caller may read, " +
			"computed with the CDC 2022 conversion factors (buprenorphine excluded; transdermal fentanyl in mcg/hr), each contributor with its daily dose, factor and MME, " +
			"the requests whose MME could not be computed and why, and the benzodiazepines that overlap.",
		"affectsState": false,
		"code":         "mme",
		"resource":     []any{"Patient"},
		"system":       false,
		"type":         false,
		"instance":     true,
		"parameter": []any{
			out("total", 1, "1", "decimal", "Total active MME/day"),
			out("level", 1, "1", "code", "below-50, 50-89 or 90-or-more"),
			out("benzodiazepineOverlap", 1, "1", "boolean", "An active opioid overlaps an active benzodiazepine"),
			out("contributor", 0, "*", "", "One opioid ingredient of one request", reqPart,
				out("ingredient", 1, "1", "Coding", "RxNorm ingredient"),
				out("dailyDose", 1, "1", "Quantity", "mg/day, or mcg/hr for a transdermal patch"),
				out("factor", 1, "1", "decimal", "CDC 2022 conversion factor"),
				out("mme", 1, "1", "decimal", "MME/day of this ingredient (0 when excluded)"),
				out("excluded", 0, "1", "string", "Why the ingredient does not count (buprenorphine)")),
			out("notComputed", 0, "*", "", "A request whose MME could not be (fully) computed", reqPart,
				out("reason", 1, "1", "string", "Why")),
			out("benzodiazepine", 0, "*", "", "An active benzodiazepine request", reqPart),
		},
	}
}
