package cdshooks

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/anodyne-fhir/anodyne/clinical/opioid"
)

// ServiceID is the opioid service's id in discovery.
const ServiceID = "opioid-mme"

const (
	cdcGuideline = "https://www.cdc.gov/mmwr/volumes/71/rr/rr7103a1.htm"
	sourceLabel  = "Anodyne opioid safety (CDC 2022 MME conversion factors)"
)

// Prefetch templates of the opioid service: the patient and its active
// MedicationRequests with the Medications they reference.
var prefetchTemplates = map[string]string{
	"patient":     "Patient/{{context.patientId}}",
	"medications": "MedicationRequest?patient={{context.patientId}}&status=active&_include=MedicationRequest:medication",
}

func opioidService(hook string, s *Service) descriptor {
	return descriptor{
		ID:    ServiceID,
		Hook:  hook,
		Title: "Opioid dose (MME/day) and benzodiazepine co-prescribing",
		Description: "Projects the patient's total morphine milligram equivalents per day (CDC 2022 conversion factors; buprenorphine excluded, " +
			"transdermal fentanyl in mcg/hr) with the draft opioid orders: info below 50 MME/day, warning at 50-89, critical at 90 or more, " +
			"and critical when an opioid would overlap a benzodiazepine; says when a draft's MME cannot be computed.",
		Prefetch:          prefetchTemplates,
		UsageRequirements: "Send draft MedicationRequests coded with RxNorm and with structured dosage (dose and timing.repeat).",
		call: func(ctx context.Context, req *Request, oc *orderContext, data dataSource) ([]Card, error) {
			return s.opioidCards(ctx, req, oc, data)
		},
	}
}

// draft is one draft MedicationRequest of the request.
type draft struct {
	ref      string
	res      map[string]any
	selected bool // order-select: among the selections; order-sign: every draft
	result   opioid.Result
}

func drafts(oc *orderContext) []draft {
	var out []draft
	for _, res := range bundleResources(oc.Drafts) {
		if res["resourceType"] != "MedicationRequest" {
			continue
		}
		switch res["status"] {
		case "cancelled", "entered-in-error", "completed", "stopped", "revoked":
			continue // not going to be active
		}
		id, _ := res["id"].(string)
		ref := "MedicationRequest/" + id
		d := draft{ref: ref, res: res, selected: oc.Selections == nil}
		for _, sel := range oc.Selections {
			if localRef(sel) == ref || (id != "" && sel == id) {
				d.selected = true
			}
		}
		out = append(out, d)
	}
	return out
}

func (s *Service) opioidCards(ctx context.Context, req *Request, oc *orderContext, source dataSource) ([]Card, error) {
	ds := drafts(oc)
	t := s.cfg.Table
	// Drafts first: when none matters to opioid safety the service says
	// nothing and fetches nothing.
	draftRes := make([]map[string]any, 0, len(ds))
	for _, d := range ds {
		draftRes = append(draftRes, d.res)
	}
	draftsOnly := resolverOf(bundleResources(oc.Drafts), nil)
	relevant := false
	for _, d := range ds {
		if d.selected && t.Compute(d.res, draftsOnly).Relevant() {
			relevant = true
		}
	}
	// A draft referencing a Medication on the server is relevant too: it
	// is decided once the data is at hand.
	if !relevant && !anyMedicationReference(ds) {
		return nil, nil
	}
	data, err := source(ctx)
	if err != nil {
		return nil, err
	}
	resolve := resolverOf(bundleResources(oc.Drafts), data.resolve)
	replaced := map[string]bool{}
	var reqs []opioid.Request
	var selected []opioid.Request
	for i := range ds {
		d := &ds[i]
		d.result = t.Compute(d.res, resolve)
		r := opioid.Request{Ref: "draft " + d.ref, Result: d.result}
		if id, _ := d.res["id"].(string); id != "" {
			replaced[d.ref] = true // a draft revising an active order replaces it
		}
		reqs = append(reqs, r)
		if d.selected && r.Result.Relevant() {
			selected = append(selected, r)
		}
	}
	if len(selected) == 0 {
		return nil, nil
	}
	for _, res := range data.requests {
		id, _ := res["id"].(string)
		ref := "MedicationRequest/" + id
		if replaced[ref] {
			continue
		}
		reqs = append(reqs, opioid.Request{Ref: ref, Result: t.Compute(res, resolve)})
	}
	sum := opioid.Summarize(reqs)
	cards := projectedCards(sum, reqs, selected, s.suggestions(oc, ds, data, sum, resolve))
	for i := range cards {
		if cards[i].Indicator != "info" {
			cards[i].OverrideReasons = s.override
		}
	}
	return cards, nil
}

// cardSuggestions are the suggestions of the MME card and of the
// benzodiazepine overlap card.
type cardSuggestions struct{ mme, overlap []Suggestion }

func (s *Service) suggestions(oc *orderContext, ds []draft, data *patientData, sum opioid.Summary, resolve opioid.Resolver) cardSuggestions {
	var out cardSuggestions
	level := sum.Level()
	if level >= opioid.LevelReassess {
		// Lower the selected opioid draft that weighs most.
		var top *draft
		for i := range ds {
			d := &ds[i]
			if d.selected && d.result.Opioid && d.result.Complete() && (top == nil || d.result.MME > top.result.MME) {
				top = d
			}
		}
		limit := opioid.Reassess
		if level == opioid.LevelHigh {
			limit = opioid.High
		}
		if top != nil {
			if lowered, r, ok := taper(s.cfg.Table, *top, sum.MME-top.result.MME, float64(limit), resolve); ok {
				out.mme = append(out.mme, newSuggestion(
					truncate(fmt.Sprintf("Lower %s to %s (%s MME/day projected)", medicationName(opioid.Request{Ref: top.ref, Result: top.result}),
						lowered["dosageInstruction"].([]any)[0].(map[string]any)["text"], opioid.Format(sum.MME-top.result.MME+r.MME)), 140),
					level == opioid.LevelHigh,
					Action{Type: "update", Description: fmt.Sprintf("Lower the draft order from %s to %s MME/day so that the projected total stays below %v MME/day.",
						opioid.Format(top.result.MME), opioid.Format(r.MME), limit), Resource: lowered}))
			}
		}
	}
	if level < opioid.LevelReassess && !sum.Overlap() {
		return out
	}
	for _, r := range data.requests {
		if s.naloxone.isRescue(r, "") {
			return out
		}
	}
	for _, d := range ds {
		if s.naloxone.isRescue(d.res, d.result.Medication) {
			return out
		}
	}
	nal := newSuggestion("Co-prescribe naloxone 4 mg nasal spray", true,
		Action{Type: "create", Description: "Add a draft order for naloxone 4 mg nasal spray (2 devices) for opioid overdose rescue.", Resource: s.naloxone.order(oc)})
	if level >= opioid.LevelReassess {
		out.mme = append(out.mme, nal)
	} else {
		out.overlap = append(out.overlap, nal)
	}
	return out
}

func anyMedicationReference(ds []draft) bool {
	for _, d := range ds {
		if _, ok := d.res["medicationReference"]; ok && d.selected {
			return true
		}
	}
	return false
}

// projectedCards are the cards for the projected picture: the MME/day
// (when a selected draft is an opioid), what could not be computed, and
// the benzodiazepine overlap (when a selected draft takes part in it).
func projectedCards(sum opioid.Summary, reqs, selected []opioid.Request, sugg cardSuggestions) []Card {
	total := opioid.Format(sum.MME)
	var cards []Card
	anyOpioid, anyBenzo := false, false
	var uncomputed []opioid.Request
	for _, r := range selected {
		anyOpioid = anyOpioid || r.Result.Opioid
		anyBenzo = anyBenzo || r.Result.Benzodiazepine
		if len(r.Result.Reasons) > 0 {
			uncomputed = append(uncomputed, r)
		}
	}
	table := contributionTable(reqs)
	if anyOpioid {
		indicator, summary, advice := "info", fmt.Sprintf("Projected opioid dose with this order: %s MME/day (below %v)", total, opioid.Reassess),
			fmt.Sprintf("This is below %v MME/day. Use the lowest effective dose and reassess benefits and risks at each increase (CDC 2022).", opioid.Reassess)
		switch sum.Level() {
		case opioid.LevelReassess:
			indicator = "warning"
			summary = fmt.Sprintf("Projected opioid dose with this order: %s MME/day (%v or more)", total, opioid.Reassess)
			advice = fmt.Sprintf("This is at or above %v MME/day. The CDC 2022 guideline asks to pause and carefully reassess benefits and risks before increasing, "+
				"follow up more often, consider tapering, and offer naloxone.", opioid.Reassess)
		case opioid.LevelHigh:
			indicator = "critical"
			summary = fmt.Sprintf("Projected opioid dose with this order: %s MME/day (%v or more)", total, opioid.High)
			advice = fmt.Sprintf("This is at or above %v MME/day: the overdose risk is high. Avoid this increase if you can, consider tapering, and offer naloxone (CDC 2022).", opioid.High)
		}
		detail := fmt.Sprintf("With the draft order(s), the patient's active opioid prescriptions would add up to **%s morphine milligram equivalents per day** (MME/day). %s\n\n%s",
			total, advice, table)
		if len(sum.Incomplete) > 0 {
			detail += fmt.Sprintf("\n\nThe total leaves out what could not be computed: %s.", reasonList(sum.Incomplete))
		}
		cards = append(cards, withSuggestions(card(summary, detail, indicator), sugg.mme))
	} else {
		sugg.overlap = append(sugg.mme, sugg.overlap...)
	}
	if len(uncomputed) > 0 {
		var names []string
		for _, r := range uncomputed {
			names = append(names, medicationName(r))
		}
		summary := truncate("Cannot compute the MME/day of "+strings.Join(names, ", "), 140)
		detail := fmt.Sprintf("The morphine milligram equivalents of this order could not be computed: %s. "+
			"Check the drug, dose and frequency yourself: the projected total of %s MME/day does not include it.\n\n%s",
			reasonList(uncomputed), total, table)
		cards = append(cards, card(summary, detail, "warning"))
	}
	if sum.Overlap() && (anyOpioid || anyBenzo) {
		detail := fmt.Sprintf("With the draft order(s) the patient would take an opioid and a benzodiazepine together (%s). "+
			"The combination raises the risk of fatal respiratory depression: the CDC 2022 guideline asks to avoid co-prescribing "+
			"when possible, and to offer naloxone. Projected opioid dose: %s MME/day.\n\n%s",
			benzoNames(sum), total, table)
		cards = append(cards, withSuggestions(card(truncate("Opioid with a benzodiazepine: avoid co-prescribing ("+total+" MME/day projected)", 140), detail, "critical"), sugg.overlap))
	}
	return cards
}

// withSuggestions attaches suggestions; the user may take any of them.
func withSuggestions(c Card, s []Suggestion) Card {
	if len(s) > 0 {
		c.Suggestions, c.SelectionBehavior = s, "any"
	}
	return c
}

func card(summary, detail, indicator string) Card {
	return Card{
		UUID: uuid.NewString(), Summary: summary, Detail: detail, Indicator: indicator,
		Source: Source{Label: sourceLabel, URL: cdcGuideline},
		Links:  []Link{{Label: "CDC Clinical Practice Guideline for Prescribing Opioids for Pain, 2022", URL: cdcGuideline, Type: "absolute"}},
	}
}

// contributionTable lists each opioid's MME/day (markdown), drafts marked.
func contributionTable(reqs []opioid.Request) string {
	var b strings.Builder
	b.WriteString("| Prescription | Daily dose | Factor | MME/day |\n|---|---|---|---|\n")
	rows := 0
	for _, r := range reqs {
		for _, c := range r.Result.Contributors {
			rows++
			unit := "mg/day"
			if c.Unit == "mcg/hr" {
				unit = "mcg/hr"
			}
			mme := opioid.Format(c.MME)
			if c.Excluded != "" {
				mme = "excluded: " + c.Excluded
			}
			fmt.Fprintf(&b, "| %s (%s) | %s %s %s | %s | %s |\n", mdEscape(medicationName(r)), origin(r), opioid.Format(c.DailyDose), unit, mdEscape(c.Name), opioid.Format(c.Factor), mdEscape(mme))
		}
	}
	if rows == 0 {
		return ""
	}
	return b.String()
}

func origin(r opioid.Request) string {
	if strings.HasPrefix(r.Ref, "draft ") {
		return "draft order"
	}
	return "active"
}

func medicationName(r opioid.Request) string {
	if r.Result.Medication != "" {
		return r.Result.Medication
	}
	return strings.TrimPrefix(r.Ref, "draft ")
}

func reasonList(reqs []opioid.Request) string {
	var parts []string
	for _, r := range reqs {
		parts = append(parts, medicationName(r)+": "+strings.Join(r.Result.Reasons, "; "))
	}
	return strings.Join(parts, "; ")
}

func benzoNames(sum opioid.Summary) string {
	var n []string
	for _, r := range sum.Benzodiazepines {
		n = append(n, medicationName(r))
	}
	return strings.Join(n, ", ")
}

func mdEscape(s string) string { return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s) }

// truncate keeps a summary within the spec's 140 characters.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
