package opioid_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/clinical/opioid"
)

// cdc2022 is the guideline's table (MMWR RR 71(3), table of MME
// conversion factors), written here by hand from the guideline and not
// read from the package, so that a wrong factor in the data file fails.
var cdc2022 = map[string]float64{
	"codeine": 0.15, "fentanyl": 2.4, "hydrocodone": 1.0, "hydromorphone": 5.0, "methadone": 4.7,
	"morphine": 1.0, "oxycodone": 1.5, "oxymorphone": 3.0, "tapentadol": 0.4, "tramadol": 0.2,
}

// dosing is a prescription described the way the guideline formula reads
// it; the test builds the FHIR request from it and computes the expected
// MME from it, separately.
type dosing struct {
	dose       float64 // units per administration (the high end)
	doseLow    float64 // > 0: a doseRange low..dose
	unit       string  // UCUM code of the dose
	freq       float64 // administrations per period (frequencyMax when freqLow > 0)
	freqLow    float64
	period     float64
	periodMax  float64
	periodUnit string
	code       string // timing.code instead of repeat
	timeOfDay  int    // timing.repeat.timeOfDay entries instead of frequency
	noTiming   bool
	prn        bool
	sequence   int
}

func (d dosing) json() map[string]any {
	out := map[string]any{}
	q := func(v float64) map[string]any {
		return map[string]any{"value": json.Number(fmt.Sprint(v)), "unit": d.unit, "system": "http://unitsofmeasure.org", "code": d.unit}
	}
	if d.doseLow > 0 {
		out["doseAndRate"] = []any{map[string]any{"doseRange": map[string]any{"low": q(d.doseLow), "high": q(d.dose)}}}
	} else if d.dose > 0 {
		out["doseAndRate"] = []any{map[string]any{"doseQuantity": q(d.dose)}}
	}
	if d.prn {
		out["asNeededBoolean"] = true
	}
	if d.sequence > 0 {
		out["sequence"] = json.Number(fmt.Sprint(d.sequence))
	}
	switch {
	case d.noTiming:
	case d.code != "":
		out["timing"] = map[string]any{"code": map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation", "code": d.code}}}}
	case d.timeOfDay > 0:
		var times []any
		for i := 0; i < d.timeOfDay; i++ {
			times = append(times, fmt.Sprintf("%02d:00:00", 8+4*i))
		}
		out["timing"] = map[string]any{"repeat": map[string]any{"timeOfDay": times}}
	default:
		rep := map[string]any{"period": json.Number(fmt.Sprint(d.period)), "periodUnit": d.periodUnit}
		if d.freqLow > 0 {
			rep["frequency"] = json.Number(fmt.Sprint(d.freqLow))
			rep["frequencyMax"] = json.Number(fmt.Sprint(d.freq))
		} else {
			rep["frequency"] = json.Number(fmt.Sprint(d.freq))
		}
		if d.periodMax > 0 {
			rep["periodMax"] = json.Number(fmt.Sprint(d.periodMax))
		}
		out["timing"] = map[string]any{"repeat": rep}
	}
	return out
}

// perDay is the guideline's "doses per day" at the high value: the most
// administrations over the shortest period (a GTS code read as its
// meaning: QID is 4 a day).
func (d dosing) perDay() float64 {
	gts := map[string]float64{"QD": 1, "BID": 2, "TID": 3, "QID": 4}
	switch {
	case d.code != "":
		return gts[d.code]
	case d.timeOfDay > 0:
		return float64(d.timeOfDay)
	}
	hours := map[string]float64{"h": 1, "d": 24, "wk": 168}[d.periodUnit]
	return d.freq * 24 / (d.period * hours)
}

func rx(code, display string) map[string]any {
	return map[string]any{"coding": []any{map[string]any{"system": opioid.RxNorm, "code": code, "display": display}}, "text": display}
}

func medication(id, ingredient, name string, num float64, numUnit string, den float64, denUnit string) map[string]any {
	return map[string]any{
		"resourceType": "Medication", "id": id,
		"code": map[string]any{"text": name},
		"ingredient": []any{map[string]any{
			"itemCodeableConcept": rx(ingredient, name),
			"strength": map[string]any{
				"numerator":   map[string]any{"value": json.Number(fmt.Sprint(num)), "system": "http://unitsofmeasure.org", "code": numUnit},
				"denominator": map[string]any{"value": json.Number(fmt.Sprint(den)), "system": "http://unitsofmeasure.org", "code": denUnit},
			},
		}},
	}
}

func TestComputeGuidelineTable(t *testing.T) {
	// An operator file adds a product the embedded table lacks (a test
	// code, clearly not a real RxCUI).
	extra := []byte(`{"drugs":[{"rxcui":"TEST-tapentadol-100","tty":"SCD","name":"tapentadol 100 MG Oral Tablet","form":"tablet","ingredients":[{"rxcui":"787390","strength":100,"unit":"mg"}]}]}`)
	tab, err := opioid.Load(opioid.WithData("test operator file", extra))
	if err != nil {
		t.Fatal(err)
	}
	store := map[string]map[string]any{
		"Medication/oxymorphone5": medication("oxymorphone5", "7814", "oxymorphone 5 MG Oral Tablet", 5, "mg", 1, "{tbl}"),
		"Medication/fentanyl50":   medication("fentanyl50", "4337", "fentanyl 50 mcg/hr patch", 50, "ug", 1, "h"),
		"Medication/morphine-sol": medication("morphine-sol", "7052", "morphine sulfate 10 MG per 5 ML oral solution", 10, "mg", 5, "mL"),
		"Medication/codeine-bad":  {"resourceType": "Medication", "id": "codeine-bad", "code": map[string]any{"text": "codeine"}, "ingredient": []any{map[string]any{"itemCodeableConcept": rx("2670", "codeine")}}},
	}
	resolve := func(ref string) (map[string]any, error) { return store[ref], nil }
	tapentadolContained := medication("tap", "787390", "tapentadol 50 MG Oral Tablet", 50, "mg", 1, "{tbl}")

	tablet := func(dose float64, freq, period float64, unit string) dosing {
		return dosing{dose: dose, unit: "{tbl}", freq: freq, period: period, periodUnit: unit}
	}
	cases := []struct {
		name     string
		med      map[string]any // medicationCodeableConcept
		ref      string         // or medicationReference
		contain  map[string]any // contained Medication for ref "#..."
		dosages  []dosing
		strength float64 // per dose unit: mg, mcg/hr, or mg/mL
		opioid   string  // ingredient name for the factor; "" not an opioid
		patch    bool
		excluded bool
		benzo    bool
		reason   string // a reason must contain this; "" none
	}{
		{name: "oxycodone 5 mg 1 tab q4h", med: rx("1049621", "oxycodone hydrochloride 5 MG Oral Tablet"), dosages: []dosing{tablet(1, 1, 4, "h")}, strength: 5, opioid: "oxycodone"},
		{name: "oxycodone 1-2 tabs q4-6h PRN", med: rx("1049621", "oxycodone 5 MG"), dosages: []dosing{{doseLow: 1, dose: 2, unit: "{tbl}", freq: 1, period: 4, periodMax: 6, periodUnit: "h", prn: true}}, strength: 5, opioid: "oxycodone"},
		{name: "oxycodone ER 10 mg BID by repeat", med: rx("1049502", "oxycodone ER 10 MG"), dosages: []dosing{tablet(1, 2, 1, "d")}, strength: 10, opioid: "oxycodone"},
		{name: "APAP/oxycodone 2 tabs up to 4 a day PRN", med: rx("1049221", "Acetaminophen 325 MG / oxyCODONE 5 MG"), dosages: []dosing{{dose: 2, unit: "{tbl}", freqLow: 1, freq: 4, period: 1, periodUnit: "d", prn: true}}, strength: 5, opioid: "oxycodone"},
		{name: "APAP/hydrocodone q6h", med: rx("857002", "Acetaminophen 325 MG / HYDROcodone 5 MG"), dosages: []dosing{tablet(1, 1, 6, "h")}, strength: 5, opioid: "hydrocodone"},
		{name: "Vicodin QID by timing code", med: rx("1310197", "Vicodin"), dosages: []dosing{{dose: 1, unit: "{tbl}", code: "QID"}}, strength: 5, opioid: "hydrocodone"},
		{name: "morphine 15 mg q4h", med: rx("892582", "morphine sulfate 15 MG"), dosages: []dosing{tablet(1, 1, 4, "h")}, strength: 15, opioid: "morphine"},
		{name: "morphine ER TID", med: rx("891878", "morphine ER 15 MG"), dosages: []dosing{{dose: 1, unit: "{tbl}", code: "TID"}}, strength: 15, opioid: "morphine"},
		{name: "morphine 14 tabs a week", med: rx("892582", "morphine 15 MG"), dosages: []dosing{tablet(1, 14, 1, "wk")}, strength: 15, opioid: "morphine"},
		{name: "morphine at three times of day", med: rx("892582", "morphine 15 MG"), dosages: []dosing{{dose: 1, unit: "{tbl}", timeOfDay: 3}}, strength: 15, opioid: "morphine"},
		{name: "tramadol 2 tabs q6h", med: rx("835603", "tramadol 50 MG"), dosages: []dosing{tablet(2, 1, 6, "h")}, strength: 50, opioid: "tramadol"},
		{name: "hydromorphone q3h", med: rx("897696", "hydromorphone 2 MG"), dosages: []dosing{tablet(1, 1, 3, "h")}, strength: 2, opioid: "hydromorphone"},
		{name: "methadone TID", med: rx("864706", "methadone 10 MG"), dosages: []dosing{tablet(1, 3, 1, "d")}, strength: 10, opioid: "methadone"},
		{name: "fentanyl 25 mcg/hr patch q72h", med: rx("245134", "fentanyl 0.025 MG/HR patch"), dosages: []dosing{{dose: 1, unit: "{patch}", freq: 1, period: 72, periodUnit: "h"}}, strength: 25, opioid: "fentanyl", patch: true},
		{name: "two fentanyl 25 patches", med: rx("245134", "fentanyl patch"), dosages: []dosing{{dose: 2, unit: "{patch}", freq: 1, period: 3, periodUnit: "d"}}, strength: 25, opioid: "fentanyl", patch: true},
		{name: "fentanyl patch by Medication strength 50 ug/h", ref: "Medication/fentanyl50", dosages: []dosing{{dose: 1, unit: "{patch}", freq: 1, period: 72, periodUnit: "h"}}, strength: 50, opioid: "fentanyl", patch: true},
		{name: "codeine ingredient 30 mg q4h", med: rx("2670", "codeine"), dosages: []dosing{{dose: 30, unit: "mg", freq: 1, period: 4, periodUnit: "h"}}, strength: 1, opioid: "codeine"},
		{name: "oxymorphone via referenced Medication q6h", ref: "Medication/oxymorphone5", dosages: []dosing{tablet(1, 1, 6, "h")}, strength: 5, opioid: "oxymorphone"},
		{name: "tapentadol via contained Medication BID 2 tabs", ref: "#tap", contain: tapentadolContained, dosages: []dosing{tablet(2, 2, 1, "d")}, strength: 50, opioid: "tapentadol"},
		{name: "tapentadol from the operator file", med: rx("TEST-tapentadol-100", "tapentadol 100 MG"), dosages: []dosing{tablet(1, 2, 1, "d")}, strength: 100, opioid: "tapentadol"},
		{name: "morphine solution 5 mL q4h", ref: "Medication/morphine-sol", dosages: []dosing{{dose: 5, unit: "mL", freq: 1, period: 4, periodUnit: "h"}}, strength: 2, opioid: "morphine"},
		{name: "oxycodone morning 2 and evening 1 (concurrent)", med: rx("1049621", "oxycodone 5 MG"), dosages: []dosing{tablet(2, 1, 1, "d"), tablet(1, 1, 1, "d")}, strength: 5, opioid: "oxycodone"},
		{name: "buprenorphine 8 mg SL daily is excluded", med: rx("351265", "buprenorphine 8 MG"), dosages: []dosing{tablet(1, 1, 1, "d")}, strength: 8, opioid: "buprenorphine", excluded: true},
		{name: "buprenorphine/naloxone is excluded", med: rx("351267", "buprenorphine 8 MG / naloxone 2 MG"), dosages: []dosing{tablet(2, 1, 1, "d")}, strength: 8, opioid: "buprenorphine", excluded: true},
		{name: "unknown oxycodone product", med: rx("999999999", "oxycodone 7.5 MG Oral Tablet"), dosages: []dosing{tablet(1, 1, 4, "h")}, reason: "not in the opioid table"},
		{name: "opioid text without a code", med: map[string]any{"text": "Hydromorphone 4 mg"}, dosages: []dosing{tablet(1, 1, 4, "h")}, reason: "carries no RxNorm code"},
		{name: "missing timing", med: rx("1049621", "oxycodone 5 MG"), dosages: []dosing{{dose: 1, unit: "{tbl}", noTiming: true}}, opioid: "oxycodone", reason: "no timing"},
		{name: "missing dose", med: rx("1049621", "oxycodone 5 MG"), dosages: []dosing{{freq: 1, period: 4, periodUnit: "h"}}, opioid: "oxycodone", reason: "no dose"},
		{name: "mg dose of a combination product", med: rx("1049221", "Acetaminophen 325 MG / oxyCODONE 5 MG"), dosages: []dosing{{dose: 325, unit: "mg", freq: 1, period: 6, periodUnit: "h"}}, opioid: "oxycodone", reason: "ambiguous"},
		{name: "fentanyl that is not a patch", med: rx("4337", "fentanyl"), dosages: []dosing{{dose: 100, unit: "ug", freq: 1, period: 4, periodUnit: "h"}}, opioid: "fentanyl", reason: "transdermal"},
		{name: "Medication without strength", ref: "Medication/codeine-bad", dosages: []dosing{tablet(1, 1, 4, "h")}, reason: "no strength"},
		{name: "missing Medication", ref: "Medication/gone", dosages: []dosing{tablet(1, 1, 4, "h")}, reason: "not available"},
		{name: "ibuprofen is not an opioid", med: rx("5640", "ibuprofen"), dosages: []dosing{{dose: 400, unit: "mg", freq: 1, period: 6, periodUnit: "h"}}},
		{name: "alprazolam is a benzodiazepine", med: rx("596", "alprazolam"), dosages: []dosing{{dose: 0.5, unit: "mg", freq: 3, period: 1, periodUnit: "d"}}, benzo: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := map[string]any{"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": map[string]any{"reference": "Patient/p"}}
			if tc.med != nil {
				req["medicationCodeableConcept"] = tc.med
			} else {
				req["medicationReference"] = map[string]any{"reference": tc.ref}
			}
			if tc.contain != nil {
				req["contained"] = []any{tc.contain}
			}
			var dis []any
			for _, d := range tc.dosages {
				dis = append(dis, d.json())
			}
			req["dosageInstruction"] = dis
			got := tab.Compute(roundTrip(t, req), resolve)

			if tc.reason != "" {
				if !strings.Contains(strings.Join(got.Reasons, "; "), tc.reason) {
					t.Fatalf("reasons %q do not say %q", got.Reasons, tc.reason)
				}
				if got.MME != 0 {
					t.Errorf("MME %v for a request that could not be computed", got.MME)
				}
				if got.Opioid != (tc.opioid != "") {
					t.Errorf("Opioid = %v, want %v", got.Opioid, tc.opioid != "")
				}
				return
			}
			if len(got.Reasons) > 0 {
				t.Fatalf("unexpected reasons: %q", got.Reasons)
			}
			if got.Benzodiazepine != tc.benzo {
				t.Errorf("Benzodiazepine = %v, want %v", got.Benzodiazepine, tc.benzo)
			}
			if tc.opioid == "" {
				if got.Opioid || got.MME != 0 || len(got.Contributors) > 0 {
					t.Fatalf("not an opioid, got %+v", got)
				}
				return
			}
			// The guideline: MME/day = strength × doses/day × factor, summed
			// over concurrent instructions; a patch is rate × patches × factor.
			daily := 0.0
			for _, d := range tc.dosages {
				if tc.patch {
					daily += tc.strength * d.dose
				} else {
					daily += tc.strength * d.dose * d.perDay()
				}
			}
			want := daily * cdc2022[tc.opioid]
			if tc.excluded {
				want = 0
			}
			if !got.Opioid || len(got.Contributors) != 1 {
				t.Fatalf("want one %s contributor, got %+v", tc.opioid, got)
			}
			c := got.Contributors[0]
			if c.Name != tc.opioid || !near(c.DailyDose, daily) || !near(got.MME, want) || !near(c.MME, want) {
				t.Errorf("got %s daily %v MME %v (contributor %v), want %s daily %v MME %v", c.Name, c.DailyDose, got.MME, c.MME, tc.opioid, daily, want)
			}
			if tc.excluded != (c.Excluded != "") {
				t.Errorf("excluded = %q, want %v", c.Excluded, tc.excluded)
			}
			if wantUnit := map[bool]string{true: "mcg/hr", false: "mg/day"}[tc.patch]; c.Unit != wantUnit {
				t.Errorf("unit %q, want %q", c.Unit, wantUnit)
			}
		})
	}
}

// TestComputeTaper: sequential instructions (a taper) are not added; the
// largest step counts.
func TestComputeTaper(t *testing.T) {
	tab := load(t)
	step := func(seq int, n float64) map[string]any {
		return dosing{dose: n, unit: "{tbl}", freq: 4, period: 1, periodUnit: "d", sequence: seq}.json()
	}
	req := map[string]any{"resourceType": "MedicationRequest", "status": "active",
		"medicationCodeableConcept": rx("1049621", "oxycodone 5 MG"),
		"dosageInstruction":         []any{step(1, 2), step(2, 1)}}
	got := tab.Compute(roundTrip(t, req), nil)
	if want := 5 * 2 * 4 * 1.5; !near(got.MME, want) {
		t.Fatalf("taper MME %v, want the first step's %v", got.MME, want)
	}
}

func TestSummaryLevels(t *testing.T) {
	for _, tc := range []struct {
		mme  float64
		want opioid.Level
	}{{0, opioid.LevelBelow}, {49.99, opioid.LevelBelow}, {50, opioid.LevelReassess}, {89.9, opioid.LevelReassess}, {90, opioid.LevelHigh}, {300, opioid.LevelHigh}} {
		if got := opioid.LevelOf(tc.mme); got != tc.want {
			t.Errorf("LevelOf(%v) = %v, want %v", tc.mme, got, tc.want)
		}
	}
	s := opioid.Summarize([]opioid.Request{
		{Ref: "a", Result: opioid.Result{Opioid: true, MME: 45}},
		{Ref: "b", Result: opioid.Result{Opioid: true, MME: 15}},
		{Ref: "c", Result: opioid.Result{Benzodiazepine: true}},
		{Ref: "d", Result: opioid.Result{Reasons: []string{"x"}}},
	})
	if s.MME != 60 || s.Level() != opioid.LevelReassess || !s.Overlap() || len(s.Incomplete) != 1 || len(s.Opioids) != 2 {
		t.Fatalf("summary %+v", s)
	}
}

func TestLoadRejectsBadOperatorFiles(t *testing.T) {
	for name, data := range map[string]string{
		"not json":            `{`,
		"unknown field":       `{"drug":[]}`,
		"factor without one":  `{"factors":[{"ingredient":"1","name":"x"}]}`,
		"drug no factor":      `{"drugs":[{"rxcui":"9","form":"tablet","ingredients":[{"rxcui":"5640","strength":1,"unit":"mg"}]}]}`,
		"patch in mg":         `{"drugs":[{"rxcui":"9","form":"patch","ingredients":[{"rxcui":"4337","strength":1,"unit":"mg"}]}]}`,
		"zero strength":       `{"drugs":[{"rxcui":"9","form":"tablet","ingredients":[{"rxcui":"7804","strength":0,"unit":"mg"}]}]}`,
		"trailing data":       `{} {}`,
		"negative timing":     `{"timingCodes":{"BID":-2}}`,
		"benzo without rxcui": `{"benzodiazepines":[{"name":"x"}]}`,
	} {
		if _, err := opioid.Load(opioid.WithData(name, []byte(data))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := opioid.Load(opioid.WithFile("testdata/does-not-exist.json")); err == nil {
		t.Error("a missing operator file was accepted")
	}
}

// FuzzCompute: any JSON a client may store as a MedicationRequest is
// computed or explained, never a panic.
func FuzzCompute(f *testing.F) {
	tab, err := opioid.Load()
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"1049621"}]},"dosageInstruction":[{"doseAndRate":[{"doseQuantity":{"value":1}}],"timing":{"repeat":{"frequency":1,"period":4,"periodUnit":"h"}}}]}`))
	f.Add([]byte(`{"medicationReference":{"reference":"#m"},"contained":[{"resourceType":"Medication","id":"m","ingredient":[{"itemCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"4337"}]},"strength":{"numerator":{"value":25,"code":"ug"},"denominator":{"value":0,"code":"h"}}}]}],"dosageInstruction":[{"doseAndRate":[{"doseRange":{"high":{"value":2}}}],"timing":{"code":{"coding":[{"code":"BID"}]}}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var req map[string]any
		if dec.Decode(&req) != nil {
			return
		}
		r := tab.Compute(req, func(string) (map[string]any, error) { return nil, nil })
		if math.IsNaN(r.MME) || math.IsInf(r.MME, 0) || r.MME < 0 {
			t.Fatalf("MME %v", r.MME)
		}
	})
}

func load(t *testing.T) *opioid.Table {
	t.Helper()
	tab, err := opioid.Load()
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// roundTrip decodes the request as the server does (json.Number).
func roundTrip(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out map[string]any
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9*math.Max(1, math.Abs(b)) }
