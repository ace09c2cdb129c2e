package cdshooks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/conformance/profile"
)

var profiles = sync.OnceValues(func() (*profile.Registry, error) { return profile.New() })

// valid fails the test unless res passes the structural validator, the
// core R4 definitions and the given profiles.
func valid(t *testing.T, what string, res map[string]any, profileURLs ...string) {
	t.Helper()
	v, _, _ := parts(t)
	raw, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	parsed, issues := v.Validate(context.Background(), raw)
	if !conformance.HasErrors(issues) {
		reg, err := profiles()
		if err != nil {
			t.Fatal(err)
		}
		issues = append(issues, reg.Validate(context.Background(), parsed.Resource, profile.Options{Profiles: profileURLs})...)
	}
	for _, is := range issues {
		if is.Severity == "error" || is.Severity == "fatal" {
			t.Errorf("%s is not valid: %s @%s: %s\n%s", what, is.Code, is.Expression, is.Diagnostics, raw)
		}
	}
}

type suggestion struct {
	label, uuid string
	actions     []map[string]any
}

// fullCards returns the cards with their suggestions.
func fullCards(t *testing.T, r response) []map[string]any {
	t.Helper()
	list, _ := r.expect(t, 200).json(t)["cards"].([]any)
	out := make([]map[string]any, len(list))
	for i, c := range list {
		out[i] = c.(map[string]any)
	}
	return out
}

func suggestionsOf(t *testing.T, c map[string]any) []suggestion {
	t.Helper()
	list, _ := c["suggestions"].([]any)
	if len(list) > 0 && c["selectionBehavior"] != "any" {
		t.Errorf("a card with suggestions has selectionBehavior %v, want any", c["selectionBehavior"])
	}
	var out []suggestion
	for _, x := range list {
		m := x.(map[string]any)
		s := suggestion{label: m["label"].(string), uuid: m["uuid"].(string)}
		for _, a := range m["actions"].([]any) {
			s.actions = append(s.actions, a.(map[string]any))
		}
		out = append(out, s)
	}
	return out
}

// action returns the one action of type typ among the suggestions.
func action(t *testing.T, ss []suggestion, typ string) (suggestion, map[string]any) {
	t.Helper()
	for _, s := range ss {
		for _, a := range s.actions {
			if a["type"] == typ {
				return s, a["resource"].(map[string]any)
			}
		}
	}
	t.Fatalf("no %s action among %+v", typ, ss)
	return suggestion{}, nil
}

func hasAction(ss []suggestion, typ string) bool {
	for _, s := range ss {
		for _, a := range s.actions {
			if a["type"] == typ {
				return true
			}
		}
	}
	return false
}

// lowered is what the documented taper rule gives, computed here from
// the guideline arithmetic (mme): over intervals from the draft's to 6,
// 8, 12 and 24 h and tablets from the draft's down to one, the highest
// MME/day whose total stays below limit, the shortest interval and the
// most tablets first on a tie.
func lowered(drug string, strength, tablets, everyHours, others, limit float64) (float64, float64, float64) {
	periods := []float64{everyHours}
	for _, p := range []float64{6, 8, 12, 24} {
		if p > everyHours {
			periods = append(periods, p)
		}
	}
	bestTabs, bestEvery, best := 0.0, 0.0, -1.0
	for _, p := range periods {
		for n := tablets; n >= 1; n-- {
			if m := mme(drug, strength, n, p); others+m < limit && m > best {
				bestTabs, bestEvery, best = n, p, m
			}
		}
	}
	return bestTabs, bestEvery, best
}

func dosage(t *testing.T, mr map[string]any) (tablets, every float64) {
	t.Helper()
	di := mr["dosageInstruction"].([]any)[0].(map[string]any)
	rep := di["timing"].(map[string]any)["repeat"].(map[string]any)
	dq := di["doseAndRate"].([]any)[0].(map[string]any)["doseQuantity"].(map[string]any)
	return dq["value"].(float64), rep["period"].(float64)
}

const opioidProfile = profile.BaseURL + "anodyne-opioid-medication-request"

func TestSuggestions(t *testing.T) {
	w := newWorld(t, false)
	oxy := mme("oxycodone", 5, 1, 6) // 30
	w.put(t, map[string]any{"resourceType": "Patient", "id": "p1"})
	w.put(t, medReq("oxy1", "p1", "active", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", 1, 6))
	user := w.iss.token(t, w.fhirBase, "user/*.rs", "")
	hydro := medReq("draft-hydro", "p1", "draft", "897696", "hydromorphone hydrochloride 2 MG Oral Tablet", 2, 4)
	valid(t, "the hydromorphone draft", hydro, opioidProfile)

	t.Run("90+: lower the draft below 90 and co-prescribe naloxone", func(t *testing.T) {
		cs := fullCards(t, w.call(t, w.root, hookRequest(t, "order-sign.json", "p1", []map[string]any{hydro}, w.fhirBase, user, nil)))
		if len(cs) != 1 || cs[0]["indicator"] != "critical" {
			t.Fatalf("cards: %v", cs)
		}
		ss := suggestionsOf(t, cs[0])
		if len(ss) != 2 {
			t.Fatalf("want a taper and a naloxone suggestion, got %+v", ss)
		}
		s, mr := action(t, ss, "update")
		wantTabs, wantEvery, wantMME := lowered("hydromorphone", 2, 2, 4, oxy, 90) // 1 tablet every 6 h: 40
		if tabs, every := dosage(t, mr); tabs != wantTabs || every != wantEvery {
			t.Errorf("lowered to %v tablets every %v h, want %v every %v h", tabs, every, wantTabs, wantEvery)
		}
		if mr["id"] != "draft-hydro" || !strings.Contains(s.label, total(oxy+wantMME)) {
			t.Errorf("update of %v labelled %q, want the draft's id and %s", mr["id"], s.label, total(oxy+wantMME))
		}
		valid(t, "the lowered draft", mr, opioidProfile)
		_, nal := action(t, ss, "create")
		coding := nal["medicationCodeableConcept"].(map[string]any)["coding"].([]any)[0].(map[string]any)
		if coding["code"] != "1725059" || nal["status"] != "draft" || nal["subject"].(map[string]any)["reference"] != "Patient/p1" ||
			nal["requester"].(map[string]any)["reference"] != "PractitionerRole/123" || nal["encounter"].(map[string]any)["reference"] != "Encounter/89284" {
			t.Errorf("naloxone order: %v", nal)
		}
		valid(t, "the naloxone order", nal)
	})

	t.Run("50-89 with prefetch: lower below 50", func(t *testing.T) {
		prefetch := map[string]any{"medications": bundle(medReq("pre-oxy", "p9", "active", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", 1, 6))}
		d := medReq("draft-morphine", "p9", "draft", "892582", "morphine sulfate 15 MG Oral Tablet", 1, 8)
		cs := fullCards(t, w.call(t, w.remoteCDS, hookRequest(t, "order-sign.json", "p9", []map[string]any{d}, "", "", prefetch)))
		if len(cs) != 1 || cs[0]["indicator"] != "warning" {
			t.Fatalf("cards: %v", cs)
		}
		_, mr := action(t, suggestionsOf(t, cs[0]), "update")
		wantTabs, wantEvery, _ := lowered("morphine", 15, 1, 8, oxy, 50) // 1 tablet every 24 h: 15
		if tabs, every := dosage(t, mr); tabs != wantTabs || every != wantEvery {
			t.Errorf("lowered to %v tablets every %v h, want %v every %v h", tabs, every, wantTabs, wantEvery)
		}
		valid(t, "the lowered draft", mr, opioidProfile)
	})

	t.Run("naloxone already prescribed: not suggested again", func(t *testing.T) {
		nalox := medReq("nal", "p9", "active", "1725059", "naloxone hydrochloride 4 MG/ACTUAT Nasal Spray", 1, 24)
		prefetch := map[string]any{"medications": bundle(medReq("pre-oxy", "p9", "active", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", 1, 6), nalox)}
		d := medReq("draft-morphine", "p9", "draft", "892582", "morphine sulfate 15 MG Oral Tablet", 1, 8)
		cs := fullCards(t, w.call(t, w.remoteCDS, hookRequest(t, "order-sign.json", "p9", []map[string]any{d}, "", "", prefetch)))
		if ss := suggestionsOf(t, cs[0]); hasAction(ss, "create") || !hasAction(ss, "update") {
			t.Errorf("suggestions with naloxone active: %+v", ss)
		}
	})

	t.Run("below 50: nothing to suggest", func(t *testing.T) {
		d := medReq("draft-tramadol", "p9", "draft", "835603", "tramadol hydrochloride 50 MG Oral Tablet", 1, 6)
		cs := fullCards(t, w.call(t, w.remoteCDS, hookRequest(t, "order-sign.json", "p9", []map[string]any{d}, "", "", map[string]any{"medications": bundle()})))
		if len(cs) != 1 || cs[0]["indicator"] != "info" || cs[0]["suggestions"] != nil {
			t.Errorf("cards: %v", cs)
		}
	})

	t.Run("benzodiazepine with an opioid: naloxone on the overlap card", func(t *testing.T) {
		d := medReq("draft-alprazolam", "p1", "draft", "596", "alprazolam 0.5 MG Oral Tablet", 1, 8)
		cs := fullCards(t, w.call(t, w.root, hookRequest(t, "order-sign.json", "p1", []map[string]any{d}, w.fhirBase, user, nil)))
		if len(cs) != 1 || !strings.Contains(fmt.Sprint(cs[0]["summary"]), "benzodiazepine") {
			t.Fatalf("cards: %v", cs)
		}
		ss := suggestionsOf(t, cs[0])
		if len(ss) != 1 || hasAction(ss, "update") {
			t.Fatalf("suggestions: %+v", ss)
		}
		_, nal := action(t, ss, "create")
		valid(t, "the naloxone order", nal)
	})
}
