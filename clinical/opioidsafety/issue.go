package opioidsafety

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/clinical/opioid"
)

// DetectedIssue statuses (R4 binds DetectedIssue.status to
// ObservationStatus). An issue that holds is "final"; when it no longer
// holds (the total fell back, the overlap ended) it is "cancelled", or
// "entered-in-error" when every request it implicated was deleted or
// itself marked entered-in-error. A cancelled issue that holds again
// becomes "final" again: the id stays, the history tells the story.
const (
	statusActive   = "final"
	statusResolved = "cancelled"
	statusError    = "entered-in-error"
)

const (
	actCode = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
	cdcRef  = "https://www.cdc.gov/mmwr/volumes/71/rr/rr7103a1.htm"
)

// IssueIDs are the deterministic DetectedIssue ids of a patient: one for
// the MME total, one for the opioid + benzodiazepine overlap.
func IssueIDs(patient string) (mme, benzo string) {
	return issueID("mme-", patient), issueID("opioid-benzo-", patient)
}

// issueID keeps ids within the 64 characters R4 allows.
func issueID(prefix, patient string) string {
	id := prefix + patient
	if len(id) <= 64 {
		return id
	}
	h := sha256.Sum256([]byte(patient))
	return prefix + hex.EncodeToString(h[:])[:64-len(prefix)]
}

func refs(reqs []opioid.Request, keep func(opioid.Request) bool) []any {
	var out []any
	for _, r := range reqs {
		if keep(r) {
			out = append(out, map[string]any{"reference": r.Ref, "display": medicationText(r)})
		}
	}
	return out
}

func names(reqs []opioid.Request) string {
	var n []string
	for _, r := range reqs {
		n = append(n, medicationText(r))
	}
	return strings.Join(n, "; ")
}

// mmeIssue is the DetectedIssue for the patient's total, or nil when the
// total is below the first threshold.
func mmeIssue(id, patient string, s opioid.Summary, at time.Time) map[string]any {
	lvl := s.Level()
	if lvl == opioid.LevelBelow {
		return nil
	}
	total := opioid.Format(s.MME)
	severity, advice := "moderate", fmt.Sprintf("at or above %v MME/day. The CDC 2022 guideline asks to pause and reassess benefits and risks before any increase, follow up more often, consider tapering, and offer naloxone.", opioid.Reassess)
	if lvl == opioid.LevelHigh {
		severity, advice = "high", fmt.Sprintf("at or above %v MME/day: the overdose risk is high. Reassess now, taper where possible, and offer naloxone (CDC 2022).", opioid.High)
	}
	detail := fmt.Sprintf("The patient's active opioid prescriptions add up to %s morphine milligram equivalents per day (MME/day), %s", total, advice)
	if len(s.Incomplete) > 0 {
		detail += fmt.Sprintf(" The total leaves out what could not be computed for: %s.", names(s.Incomplete))
	}
	return issue(id, patient, at, severity, "DOSEH", "High Dose Alert",
		fmt.Sprintf("Opioid dosage %s MME/day", total), detail,
		refs(s.Opioids, func(r opioid.Request) bool { return r.Result.MME > 0 }), s.MME)
}

// benzoIssue is the DetectedIssue for an opioid with a benzodiazepine.
func benzoIssue(id, patient string, s opioid.Summary, at time.Time) map[string]any {
	if !s.Overlap() {
		return nil
	}
	all := append(append([]opioid.Request(nil), s.Opioids...), s.Benzodiazepines...)
	seen := map[string]bool{}
	implicated := refs(all, func(r opioid.Request) bool {
		if seen[r.Ref] {
			return false
		}
		seen[r.Ref] = true
		return true
	})
	detail := fmt.Sprintf("An active opioid (%s) overlaps an active benzodiazepine (%s). Taken together they raise the risk of respiratory depression and fatal overdose; the CDC 2022 guideline asks clinicians to avoid the combination where possible, and to offer naloxone.", names(s.Opioids), names(s.Benzodiazepines))
	return issue(id, patient, at, "high", "DRG", "Drug Interaction Alert",
		"Opioid and benzodiazepine prescribed together", detail, implicated, s.MME)
}

func issue(id, patient string, at time.Time, severity, code, display, text, detail string, implicated []any, total float64) map[string]any {
	res := map[string]any{
		"resourceType": "DetectedIssue", "id": id,
		"status":   statusActive,
		"severity": severity,
		"code": map[string]any{
			"coding": []any{map[string]any{"system": actCode, "code": code, "display": display}},
			"text":   text,
		},
		"patient":            map[string]any{"reference": "Patient/" + patient},
		"identifiedDateTime": at.UTC().Format(time.RFC3339),
		"detail":             detail,
		"reference":          cdcRef,
		"extension": []any{map[string]any{"url": ExtensionURL, "extension": []any{
			map[string]any{"url": "patientTotal", "valueDecimal": decimal(total)},
		}}},
	}
	if len(implicated) > 0 {
		res["implicated"] = implicated
	}
	return res
}

// resolved turns the stored issue prev into its resolved version: the
// condition no longer holds (why), or every implicated request is gone.
func resolved(prev map[string]any, why string, gone bool, at time.Time) map[string]any {
	res := map[string]any{}
	for k, v := range prev {
		if k != "meta" {
			res[k] = v
		}
	}
	res["status"] = statusResolved
	if gone {
		res["status"] = statusError
	}
	res["detail"] = "Resolved: " + why
	res["mitigation"] = []any{map[string]any{
		"action": map[string]any{"text": why},
		"date":   at.UTC().Format(time.RFC3339),
	}}
	return res
}
