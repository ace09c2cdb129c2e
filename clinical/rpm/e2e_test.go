package rpm

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// obsJSON is a reading of one LOINC code for a patient, h hours after t0.
func obsJSON(id, patient, code string, h float64, value float64, unit string) string {
	idPart := ""
	if id != "" {
		idPart = fmt.Sprintf(`"id":%q,`, id)
	}
	return fmt.Sprintf(`{"resourceType":"Observation",%s"status":"final",
		"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
		"code":{"coding":[{"system":"http://loinc.org","code":%q}]},"subject":{"reference":"Patient/%s"},
		"effectiveDateTime":%q,"valueQuantity":{"value":%v,"unit":%q,"system":"http://unitsofmeasure.org","code":%q}}`,
		idPart, code, patient, at(h), value, unit, unit)
}

func bpJSON(id, patient string, h float64, sys, dia float64) string {
	return fmt.Sprintf(`{"resourceType":"Observation","id":%q,"status":"final",
		"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
		"code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"subject":{"reference":"Patient/%s"},"effectiveDateTime":%q,
		"component":[
		 {"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":%v,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}},
		 {"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":%v,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]}`,
		id, patient, at(h), sys, dia)
}

func at(h float64) string {
	return t0.Add(time.Duration(h * float64(time.Hour))).Format(time.RFC3339)
}

// band is an independent statement of the bands a test expects: the
// shared RPM document's numbers, or a Goal the test wrote.
type band struct{ critLo, lo, hi, critHi float64 } // strict: v < lo is low, v > hi is high

func (b band) interp(v float64) string {
	switch {
	case v < b.critLo:
		return "LL"
	case v > b.critHi:
		return "HH"
	case v < b.lo:
		return "L"
	case v > b.hi:
		return "H"
	}
	return "N"
}

const inf = 1e300

var (
	spo2Doc = band{critLo: 92, lo: 95, hi: inf, critHi: inf}
	hrDoc   = band{critLo: -inf, lo: 50, hi: 100, critHi: inf}
	sysDoc  = band{critLo: -inf, lo: 100, hi: 160, critHi: inf}
	diaDoc  = band{critLo: -inf, lo: 60, hi: 95, critHi: inf}
)

func interpOf(res map[string]any) string {
	list, _ := res["interpretation"].([]any)
	if len(list) == 0 {
		return ""
	}
	codings, _ := asMap(list[0])["coding"].([]any)
	if len(codings) == 0 {
		return ""
	}
	code, _ := asMap(codings[0])["code"].(string)
	return code
}

// storedReadings reads a patient's readings of a code back over the API
// (code, or component-code for a panel component) and turns them into
// Readings with the test's own parsing.
func storedReadings(t *testing.T, c *client, patient, code string, component bool) []Reading {
	t.Helper()
	param := "code"
	if component {
		param = "component-code"
	}
	b := c.do("GET", "/Observation?subject=Patient/"+patient+"&"+param+"="+url.QueryEscape("http://loinc.org|"+code)+"&_count=200", "", 200)
	var out []Reading
	entries, _ := b["entry"].([]any)
	for _, e := range entries {
		res := asMap(asMap(e)["resource"])
		if res["status"] == "entered-in-error" {
			continue
		}
		eff, err := time.Parse(time.RFC3339, res["effectiveDateTime"].(string))
		if err != nil {
			t.Fatal(err)
		}
		holder := res
		if component {
			for _, comp := range res["component"].([]any) {
				if strings.Contains(fmt.Sprint(asMap(comp)["code"]), code) {
					holder = asMap(comp)
				}
			}
		}
		r := Reading{Ref: "Observation/" + res["id"].(string), Effective: eff, Interpretation: interpOf(holder)}
		if v, ok := asMap(holder["valueQuantity"])["value"].(json.Number); ok {
			r.Value, _ = v.Float64()
			if asMap(holder["valueQuantity"])["code"] == "[lb_av]" {
				r.Value *= 0.45359237
			}
			r.HasValue = true
		}
		out = append(out, r)
	}
	return out
}

// checkAlerts compares the Flag and DetectedIssue of a patient's measure
// with what the oracle makes of the stored readings, and checks there is
// at most one Flag per measure.
func checkAlerts(t *testing.T, c *client, th *Thresholds, patient, key string) (active, critical bool) {
	t.Helper()
	m := mustKey(t, th, key)
	component := key == "systolic" || key == "diastolic"
	rs := storedReadings(t, c, patient, m.Codes[0], component)
	active, critical, evidence := oracle(m.Rule, rs)
	flags := c.do("GET", "/Flag?patient=Patient/"+patient+"&_count=100", "", 200)
	var mine []map[string]any
	for _, e := range asSlice(flags["entry"]) {
		f := asMap(asMap(e)["resource"])
		if strings.Contains(fmt.Sprint(f["code"]), `code:`+m.Codes[0]+` `) {
			mine = append(mine, f)
		}
	}
	if len(mine) > 1 {
		t.Fatalf("%s/%s: %d Flags for one measure", patient, key, len(mine))
	}
	if !active {
		if len(mine) == 1 && mine[0]["status"] != "inactive" {
			t.Errorf("%s/%s: the oracle sees no breach in %v, the Flag is %v", patient, key, rs, mine[0]["status"])
		}
	} else {
		if len(mine) == 0 || mine[0]["status"] != "active" {
			t.Fatalf("%s/%s: the oracle sees a breach (%v), Flags: %v", patient, key, evidence, mine)
		}
		var linked []string
		for _, x := range asSlice(mine[0]["extension"]) {
			if asMap(x)["url"] == FlagDetailURL {
				linked = append(linked, asMap(asMap(x)["valueReference"])["reference"].(string))
			}
		}
		if m.Rule.Kind == RuleCount {
			slices.Sort(linked)
		}
		if !slices.Equal(linked, evidence) {
			t.Errorf("%s/%s: Flag linked to %v, the oracle's evidence is %v", patient, key, linked, evidence)
		}
	}
	dis := c.do("GET", "/DetectedIssue?patient=Patient/"+patient+"&_count=100", "", 200)
	open := 0
	for _, e := range asSlice(dis["entry"]) {
		d := asMap(asMap(e)["resource"])
		if !strings.Contains(fmt.Sprint(d["code"]), `code:`+m.Codes[0]+` `) {
			continue
		}
		if asMap(d["identifiedPeriod"])["end"] == nil {
			open++
			if d["severity"] != "high" {
				t.Errorf("%s/%s: DetectedIssue severity %v", patient, key, d["severity"])
			}
		}
	}
	if want := map[bool]int{true: 1, false: 0}[critical]; open != want {
		t.Errorf("%s/%s: %d open DetectedIssues, the oracle says critical=%v", patient, key, open, critical)
	}
	return active, critical
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

func TestEndToEnd(t *testing.T) {
	th := defaults(t)
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			c := startServer(t, be.Open(t), NewObserver(th, nil))
			for _, p := range []string{"spo2", "hr", "wt", "copd", "loose", "sender"} {
				c.do("PUT", "/Patient/p-"+p, `{"resourceType":"Patient","id":"p-`+p+`"}`, 201)
			}
			t.Run("single POSTs, recovery, late uploads", func(t *testing.T) {
				steps := []struct {
					h, v   float64
					active bool // what the scenario is built to show
				}{
					{0, 96, false}, {1, 93, false}, {2, 91, true}, {3, 90, true}, // 3: critical twice
					{4, 97, true}, {5, 98, false}, // recovery
					{4.5, 85, false}, {4.7, 86, true}, // late uploads between 4 and 5 re-open it
				}
				for i, s := range steps {
					res := c.do("POST", "/Observation", obsJSON("", "p-spo2", "2708-6", s.h, s.v, "%"), 201)
					if got, want := interpOf(res), spo2Doc.interp(s.v); got != want {
						t.Errorf("step %d: SpO2 %v interpreted %s, want %s", i, s.v, got, want)
					}
					if rr := asSlice(res["referenceRange"]); len(rr) != 1 || asMap(asMap(rr[0])["low"])["value"] != json.Number("95") {
						t.Errorf("step %d: referenceRange %v", i, res["referenceRange"])
					}
					if active, _ := checkAlerts(t, c, th, "p-spo2", "spo2"); active != s.active {
						t.Errorf("step %d: alert active=%v, the scenario needs %v", i, active, s.active)
					}
				}
				// A single Flag through it all: three episodes are versions.
				id := AlertID(mustKey(t, th, "spo2"), "p-spo2")
				// What the observer writes is valid R4.
				v, _ := serverParts(t)
				for _, path := range []string{"/Flag/" + id, "/DetectedIssue/" + id, "/Observation?subject=Patient/p-spo2&_count=1"} {
					res := c.do("GET", path, "", 200)
					if res["resourceType"] == "Bundle" {
						res = asMap(asSlice(res["entry"])[0])["resource"].(map[string]any)
					}
					raw, _ := json.Marshal(res)
					if _, issues := v.Validate(context.Background(), raw); len(issues) > 0 {
						for _, is := range issues {
							if is.Severity == "error" || is.Severity == "fatal" {
								t.Errorf("%s is not valid R4: %+v", path, is)
							}
						}
					}
				}
				hist := c.do("GET", "/Flag/"+id+"/_history", "", 200)
				var statuses []string
				for _, e := range asSlice(hist["entry"]) {
					statuses = append(statuses, fmt.Sprint(asMap(asMap(e)["resource"])["status"]))
				}
				if !slices.Contains(statuses, "inactive") || statuses[0] != "active" {
					t.Errorf("Flag history (newest first) %v: want an inactive episode and active now", statuses)
				}
				// Migration: the readings and alerts of this patient, exported
				// and imported into another store (in an order unlike the
				// readings' own), arrive as they were.
				var lines []string
				want := map[string]string{}
				for _, path := range []string{"/DetectedIssue/" + id, "/Observation?subject=Patient/p-spo2&_sort=-date&_count=100", "/Flag/" + id} {
					res := c.do("GET", path, "", 200)
					list := []any{res}
					if res["resourceType"] == "Bundle" {
						list = nil
						for _, e := range asSlice(res["entry"]) {
							list = append(list, asMap(e)["resource"])
						}
					}
					for _, r := range list {
						m := asMap(r)
						delete(m, "meta")
						raw, _ := json.Marshal(m)
						lines = append(lines, string(raw))
						want[m["resourceType"].(string)+"/"+m["id"].(string)] = string(raw)
					}
				}
				c2 := startServer(t, backends()[0].Open(t), NewObserver(th, nil))
				c2.do("POST", "/$import", strings.Join(lines, "\n")+"\n", 200, "Content-Type: application/fhir+ndjson")
				for ref, w := range want {
					m := c2.do("GET", "/"+ref, "", 200)
					delete(m, "meta")
					if raw, _ := json.Marshal(m); string(raw) != w {
						t.Errorf("%s after migration:\n%s\nwant\n%s", ref, raw, w)
					}
				}
			})
			t.Run("transaction out of order, correction", func(t *testing.T) {
				c.do("POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[
					{"resource":`+obsJSON("hr3", "p-hr", "8867-4", 3, 70, "/min")+`,"request":{"method":"PUT","url":"Observation/hr3"}},
					{"resource":`+obsJSON("hr1", "p-hr", "8867-4", 1, 120, "/min")+`,"request":{"method":"PUT","url":"Observation/hr1"}},
					{"resource":`+obsJSON("hr2", "p-hr", "8867-4", 2, 130, "/min")+`,"request":{"method":"PUT","url":"Observation/hr2"}}]}`, 200)
				for id, v := range map[string]float64{"hr1": 120, "hr2": 130, "hr3": 70} {
					if got := interpOf(c.do("GET", "/Observation/"+id, "", 200)); got != hrDoc.interp(v) {
						t.Errorf("%s: %s, want %s", id, got, hrDoc.interp(v))
					}
				}
				if active, _ := checkAlerts(t, c, th, "p-hr", "heart-rate"); !active {
					t.Error("two high heart rates of three, posted out of order: no alert")
				}
				// A client reads hr3, changes its value and writes it back
				// with the interpretation it read: ours, so recomputed.
				hr3 := c.do("GET", "/Observation/hr3", "", 200)
				hr3["valueQuantity"].(map[string]any)["value"] = json.Number("140")
				delete(hr3, "meta")
				raw, _ := json.Marshal(hr3)
				if got := interpOf(c.do("PUT", "/Observation/hr3", string(raw), 200)); got != hrDoc.interp(140) {
					t.Errorf("hr3 changed to 140 with the interpretation read back: %s, want %s", got, hrDoc.interp(140))
				}
				hr3["valueQuantity"].(map[string]any)["value"] = json.Number("70")
				raw, _ = json.Marshal(hr3)
				c.do("PUT", "/Observation/hr3", string(raw), 200)
				// hr1 was a mistake: entered-in-error ends the breach.
				fix := strings.Replace(obsJSON("hr1", "p-hr", "8867-4", 1, 120, "/min"), `"status":"final"`, `"status":"entered-in-error"`, 1)
				c.do("PUT", "/Observation/hr1", fix, 200)
				if active, _ := checkAlerts(t, c, th, "p-hr", "heart-rate"); active {
					t.Error("alert still active after the reading was entered in error")
				}
				// A new high reading re-opens it; deleting it closes it again.
				c.do("PUT", "/Observation/hr4", obsJSON("hr4", "p-hr", "8867-4", 4, 125, "/min"), 201)
				if active, _ := checkAlerts(t, c, th, "p-hr", "heart-rate"); !active {
					t.Error("hr2 and hr4 high of the last three: no alert")
				}
				c.do("DELETE", "/Observation/hr4", "", 204)
				if active, _ := checkAlerts(t, c, th, "p-hr", "heart-rate"); active {
					t.Error("alert still active after its reading was deleted")
				}
			})
			t.Run("bulk import: weight gain and blood pressure panels", func(t *testing.T) {
				lines := []string{
					obsJSON("w0", "p-wt", "29463-7", 0, 80, "kg"),
					obsJSON("w2", "p-wt", "29463-7", 48, 81.2, "kg"),
					obsJSON("w1", "p-wt", "29463-7", 24, 176.4, "[lb_av]"),
					bpJSON("bp1", "p-wt", 1, 171, 80), bpJSON("bp2", "p-wt", 2, 165, 82), bpJSON("bp3", "p-wt", 3, 150, 99),
				}
				var body strings.Builder
				for _, l := range lines {
					body.WriteString(strings.Join(strings.Fields(l), " ") + "\n")
				}
				c.do("POST", "/$import", body.String(), 200, "Content-Type: application/fhir+ndjson")
				if active, _ := checkAlerts(t, c, th, "p-wt", "weight"); !active {
					t.Error("1.2 kg in two days: no weight alert")
				}
				if active, _ := checkAlerts(t, c, th, "p-wt", "systolic"); !active {
					t.Error("systolic 171 and 165: no alert")
				}
				if active, _ := checkAlerts(t, c, th, "p-wt", "diastolic"); active {
					t.Error("one high diastolic of three raised an alert")
				}
				bp := c.do("GET", "/Observation/bp1", "", 200)
				comps := asSlice(bp["component"])
				if interpOf(asMap(comps[0])) != sysDoc.interp(171) || interpOf(asMap(comps[1])) != diaDoc.interp(80) || interpOf(bp) != "H" {
					t.Errorf("bp1 interpretations: panel %s, components %s %s", interpOf(bp), interpOf(asMap(comps[0])), interpOf(asMap(comps[1])))
				}
				// The weight drops back: recovery.
				c.do("POST", "/Observation", obsJSON("", "p-wt", "29463-7", 60, 80.5, "kg"), 201)
				if active, _ := checkAlerts(t, c, th, "p-wt", "weight"); active {
					t.Error("weight back within 1 kg of the 3-day low: alert still active")
				}
			})
			t.Run("care team overrides", func(t *testing.T) {
				// COPD: SpO2 target 88-100 %; heart rate 40-110 with an
				// explicit critical range 35-130; pain <= 4. The Goals
				// count only through the active CarePlan.
				c.do("PUT", "/Goal/g-spo2", `{"resourceType":"Goal","id":"g-spo2","lifecycleStatus":"active","description":{"text":"SpO2 88-100"},
					"subject":{"reference":"Patient/p-copd"},
					"target":[{"measure":{"coding":[{"system":"http://loinc.org","code":"2708-6"}]},
					  "detailRange":{"low":{"value":88,"unit":"%","system":"http://unitsofmeasure.org","code":"%"},"high":{"value":100,"unit":"%","system":"http://unitsofmeasure.org","code":"%"}}}]}`, 201)
				c.do("PUT", "/Goal/g-hr", `{"resourceType":"Goal","id":"g-hr","lifecycleStatus":"active","description":{"text":"HR"},
					"subject":{"reference":"Patient/p-copd"},
					"target":[{"measure":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},
					  "extension":[{"url":"`+CriticalRangeURL+`","valueRange":{"low":{"value":35,"system":"http://unitsofmeasure.org","code":"/min"},"high":{"value":130,"system":"http://unitsofmeasure.org","code":"/min"}}}],
					  "detailRange":{"low":{"value":40,"system":"http://unitsofmeasure.org","code":"/min"},"high":{"value":110,"system":"http://unitsofmeasure.org","code":"/min"}}},
					 {"measure":{"coding":[{"system":"http://loinc.org","code":"72514-3"}]},"detailQuantity":{"value":4,"comparator":"<=","system":"http://unitsofmeasure.org","code":"{score}"}}]}`, 201)
				// The same SpO2 Goal for another patient, in no CarePlan.
				c.do("PUT", "/Goal/g-loose", `{"resourceType":"Goal","id":"g-loose","lifecycleStatus":"active","description":{"text":"SpO2 88-100"},
					"subject":{"reference":"Patient/p-loose"},
					"target":[{"measure":{"coding":[{"system":"http://loinc.org","code":"2708-6"}]},
					  "detailRange":{"low":{"value":88,"system":"http://unitsofmeasure.org","code":"%"}}}]}`, 201)
				c.do("PUT", "/CarePlan/cp-copd", `{"resourceType":"CarePlan","id":"cp-copd","status":"active","intent":"plan",
					"subject":{"reference":"Patient/p-copd"},"goal":[{"reference":"Goal/g-spo2"},{"reference":"Goal/g-hr"}]}`, 201)
				spo2Goal := band{critLo: 88, lo: 88, hi: 100, critHi: inf} // the default 92 critical band moved out of the target
				hrGoal := band{critLo: 35, lo: 40, hi: 110, critHi: 130}
				painGoal := band{critLo: -inf, lo: -inf, hi: 4, critHi: inf}
				cases := []struct {
					patient, code, unit string
					v                   float64
					want                string
					source              string
				}{
					{"p-copd", "2708-6", "%", 90, spo2Goal.interp(90), "Goal/g-spo2"},
					{"p-copd", "2708-6", "%", 87, spo2Goal.interp(87), "Goal/g-spo2"},
					{"p-copd", "8867-4", "/min", 38, hrGoal.interp(38), "Goal/g-hr"},
					{"p-copd", "8867-4", "/min", 45, hrGoal.interp(45), "Goal/g-hr"},
					{"p-copd", "8867-4", "/min", 120, hrGoal.interp(120), "Goal/g-hr"},
					{"p-copd", "8867-4", "/min", 131, hrGoal.interp(131), "Goal/g-hr"},
					{"p-copd", "72514-3", "{score}", 5, painGoal.interp(5), "Goal/g-hr"},
					{"p-loose", "2708-6", "%", 90, spo2Doc.interp(90), ""},
				}
				for i, k := range cases {
					res := c.do("POST", "/Observation", obsJSON("", k.patient, k.code, float64(i), k.v, k.unit), 201)
					if got := interpOf(res); got != k.want {
						t.Errorf("%s %s %v: %s, want %s", k.patient, k.code, k.v, got, k.want)
					}
					rr := asMap(asSlice(res["referenceRange"])[0])
					text, _ := rr["text"].(string)
					if k.source != "" && (!strings.Contains(text, k.source) || !strings.Contains(fmt.Sprint(rr["type"]), "recommended")) {
						t.Errorf("%s %s: referenceRange does not name %s: %v", k.patient, k.code, k.source, rr)
					}
				}
				// The plan ends: defaults again.
				c.do("PUT", "/CarePlan/cp-copd", `{"resourceType":"CarePlan","id":"cp-copd","status":"completed","intent":"plan",
					"subject":{"reference":"Patient/p-copd"},"goal":[{"reference":"Goal/g-spo2"}]}`, 200)
				if got := interpOf(c.do("POST", "/Observation", obsJSON("", "p-copd", "2708-6", 20, 90, "%"), 201)); got != spo2Doc.interp(90) {
					t.Errorf("after the CarePlan completed, SpO2 90 is %s, want the default %s", got, spo2Doc.interp(90))
				}
			})
			t.Run("the sender's interpretation is kept", func(t *testing.T) {
				body := strings.Replace(obsJSON("", "p-sender", "2708-6", 0, 85, "%"), `"status"`,
					`"interpretation":[{"coding":[{"system":"`+Interpretation+`","code":"N"}]}],"status"`, 1)
				res := c.do("POST", "/Observation", body, 201)
				if interpOf(res) != "N" || len(asSlice(res["referenceRange"])) != 1 {
					t.Errorf("sender's N replaced or no referenceRange added: %v %v", res["interpretation"], res["referenceRange"])
				}
			})
		})
	}
}
