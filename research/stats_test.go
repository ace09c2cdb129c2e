package research_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The $stats data set: statsPatients patients, each with three pain
// scores on one day (patient i on day 3i of 2024) and one heart rate;
// one more pain score is entered-in-error and must never count.
const (
	statsPatients = 30
	painCode      = "http://loinc.org|72514-3"
	hrCode        = "http://loinc.org|8867-4"
	allStats      = "count,average,minimum,maximum,median,std-dev,sum,variance,20-percent,80-percent,4-lower,4-upper,4-dev,5-2"
)

type statsObs struct {
	patient string
	value   float64
	at      time.Time
}

func painValue(i, j int) float64 { return float64((i*7+j*3)%11) + float64(j)*0.25 }

func seedStats(t *testing.T, e *env) []statsObs {
	t.Helper()
	var entries []string
	var pain []statsObs
	add := func(res string) {
		var m map[string]any
		if err := json.Unmarshal([]byte(res), &m); err != nil {
			t.Fatalf("seed %s: %v", res, err)
		}
		entries = append(entries, fmt.Sprintf(`{"resource":%s,"request":{"method":"PUT","url":"%s/%s"}}`, res, m["resourceType"], m["id"]))
	}
	for i := range statsPatients {
		p := fmt.Sprintf("sp%02d", i)
		add(fmt.Sprintf(`{"resourceType":"Patient","id":"%s","name":[{"family":"Statsfamily%d"}],"birthDate":"1960-01-%02d"}`, p, i, 1+i%28))
		day := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, 3*i)
		for j, hour := range []int{8, 12, 18} {
			o := statsObs{patient: p, value: painValue(i, j), at: day.Add(time.Duration(hour) * time.Hour)}
			pain = append(pain, o)
			add(fmt.Sprintf(`{"resourceType":"Observation","id":"%s-pain%d","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"72514-3"}]},
 "subject":{"reference":"Patient/%s"},"effectiveDateTime":"%s","valueQuantity":{"value":%s,"unit":"{score}","system":"http://unitsofmeasure.org","code":"{score}"}}`,
				p, j, p, o.at.Format(time.RFC3339), strconv.FormatFloat(o.value, 'f', -1, 64)))
		}
		add(fmt.Sprintf(`{"resourceType":"Observation","id":"%s-hr","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},
 "subject":{"reference":"Patient/%s"},"effectiveDateTime":"%s","valueQuantity":{"value":%d,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}`,
			p, p, day.Format(time.RFC3339), 60+i))
	}
	add(`{"resourceType":"Observation","id":"sp00-wrong","status":"entered-in-error","code":{"coding":[{"system":"http://loinc.org","code":"72514-3"}]},
 "subject":{"reference":"Patient/sp00"},"effectiveDateTime":"2024-01-01T09:00:00Z","valueQuantity":{"value":1000,"unit":"{score}","system":"http://unitsofmeasure.org","code":"{score}"}}`)
	members := func(from, to int) string {
		var ms []string
		for i := from; i < to; i++ {
			ms = append(ms, fmt.Sprintf(`{"entity":{"reference":"Patient/sp%02d"}}`, i))
		}
		return strings.Join(ms, ",")
	}
	add(`{"resourceType":"Group","id":"g-small","type":"person","actual":true,"member":[` + members(0, 5) + `]}`)
	add(`{"resourceType":"Group","id":"g-a","type":"person","actual":true,"member":[` + members(0, 14) + `]}`)
	add(`{"resourceType":"Group","id":"g-b","type":"person","actual":true,"member":[` + members(0, 17) + `]}`)
	if st, b := e.do("clinician", "POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[`+strings.Join(entries, ",")+`]}`); st != 200 {
		t.Fatalf("seed transaction: %d %v", st, b)
	}
	return pain
}

// expected computes every statistic of values here: sorted, linear
// interpolation between closest ranks, sample variance.
func expected(values []float64) map[string]float64 {
	v := append([]float64(nil), values...)
	sort.Float64s(v)
	n := float64(len(v))
	sum := 0.0
	for _, x := range v {
		sum += x
	}
	mean := sum / n
	ss := 0.0
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	q := func(p float64) float64 {
		pos := p * (n - 1)
		lo := int(math.Floor(pos))
		if lo+1 >= len(v) {
			return v[lo]
		}
		return v[lo] + (pos-float64(lo))*(v[lo+1]-v[lo])
	}
	return map[string]float64{"count": n, "average": mean, "minimum": v[0], "maximum": v[len(v)-1], "median": q(0.5),
		"std-dev": math.Sqrt(ss / (n - 1)), "sum": sum, "variance": ss / (n - 1), "20-percent": q(0.2), "80-percent": q(0.8),
		"4-lower": q(0.25), "4-upper": q(0.75), "4-dev": (q(0.75) - q(0.25)) / 2, "5-2": q(0.4)}
}

// statsAnswer reads the components of the statistics Observations of an
// answer: code|unit -> statistic -> value, with "masked" values NaN.
func statsAnswer(t *testing.T, b map[string]any) map[string]map[string]float64 {
	t.Helper()
	out := map[string]map[string]float64{}
	ps, _ := b["parameter"].([]any)
	for _, p := range ps {
		pm := p.(map[string]any)
		if pm["name"] != "statistics" {
			continue
		}
		obs := pm["resource"].(map[string]any)
		coding := obs["code"].(map[string]any)["coding"].([]any)[0].(map[string]any)
		key := fmt.Sprint(coding["system"], "|", coding["code"])
		cell := map[string]float64{}
		for _, c := range obs["component"].([]any) {
			cm := c.(map[string]any)
			code := cm["code"].(map[string]any)["coding"].([]any)[0].(map[string]any)["code"].(string)
			switch {
			case cm["dataAbsentReason"] != nil:
				// NaN for masked, -Inf for not applicable (no values).
				cell[code] = math.Inf(-1)
				if strings.Contains(mustString(cm["dataAbsentReason"]), `"masked"`) {
					cell[code] = math.NaN()
				}
			case cm["valueInteger"] != nil:
				cell[code], _ = strconv.ParseFloat(string(cm["valueInteger"].(json.Number)), 64)
			default:
				cell[code], _ = strconv.ParseFloat(string(cm["valueQuantity"].(map[string]any)["value"].(json.Number)), 64)
			}
		}
		out[key] = cell
	}
	return out
}

func checkFigures(t *testing.T, what string, got map[string]float64, want map[string]float64) {
	t.Helper()
	for _, code := range strings.Split(allStats, ",") {
		if g, w := got[code], want[code]; math.IsNaN(g) || math.IsInf(g, 0) || math.Abs(g-w) > 1e-9*math.Max(1, math.Abs(w)) {
			t.Errorf("%s %s = %v, want %v", what, code, g, w)
		}
	}
}

func masked(cell map[string]float64) bool {
	for _, v := range cell {
		if !math.IsNaN(v) {
			return false
		}
	}
	return len(cell) > 0
}

func TestStats(t *testing.T) {
	for _, backend := range backendNames {
		t.Run(backend, func(t *testing.T) {
			e := startOn(t, backend, nil)
			pain := seedStats(t, e)
			q := "/Observation/$stats?code=72514-3&system=http://loinc.org&statistic=" + allStats
			values := func(keep func(statsObs) bool) []float64 {
				var v []float64
				for _, o := range pain {
					if keep(o) {
						v = append(v, o.value)
					}
				}
				return v
			}
			all := expected(values(func(statsObs) bool { return true }))

			// A clinician: population, one patient, a cohort, a period.
			st, b := e.do("clinician", "GET", q, "")
			if st != 200 {
				t.Fatalf("clinician $stats: %d %v", st, b)
			}
			checkFigures(t, "clinician population", statsAnswer(t, b)[painCode], all)
			_, b = e.do("clinician", "GET", q+"&subject=Patient/sp03", "")
			checkFigures(t, "clinician Patient/sp03", statsAnswer(t, b)[painCode], expected(values(func(o statsObs) bool { return o.patient == "sp03" })))
			_, b = e.do("clinician", "GET", q+"&patient=Group/g-small", "")
			checkFigures(t, "clinician Group/g-small", statsAnswer(t, b)[painCode], expected(values(func(o statsObs) bool { return o.patient < "sp05" })))
			end := time.Date(2024, 2, 15, 23, 59, 59, 0, time.UTC)
			_, b = e.do("clinician", "GET", q+"&period=2024-01-01/2024-02-15", "")
			checkFigures(t, "clinician period", statsAnswer(t, b)[painCode], expected(values(func(o statsObs) bool { return !o.at.After(end) })))
			// POST: the same parameters in a Parameters resource, the
			// cohort and period as a Reference and a Period.
			var post []string
			for _, st := range strings.Split(allStats, ",") {
				post = append(post, `{"name":"statistic","valueCode":"`+st+`"}`)
			}
			st, b = e.do("clinician", "POST", "/Observation/$stats", `{"resourceType":"Parameters","parameter":[{"name":"code","valueString":"72514-3"},
 {"name":"system","valueUri":"http://loinc.org"},{"name":"patient","valueReference":{"reference":"Group/g-small"}},
 {"name":"period","valuePeriod":{"start":"2024-01-01","end":"2024-02-15"}},`+strings.Join(post, ",")+`]}`)
			if st != 200 {
				t.Fatalf("POST $stats: %d %v", st, b)
			}
			checkFigures(t, "clinician POST Group/g-small and period", statsAnswer(t, b)[painCode],
				expected(values(func(o statsObs) bool { return o.patient < "sp05" && !o.at.After(end) })))
			for _, bad := range []string{
				`{"resourceType":"Observation"}`,
				`{"resourceType":"Parameters","parameter":[{"name":"coding","valueAttachment":{"url":"x"}},{"name":"statistic","valueCode":"count"}]}`,
				`{"resourceType":"Parameters","parameter":[{"name":"code","valueString":"72514-3","valueCode":"x"},{"name":"statistic","valueCode":"count"}]}`,
				`{"resourceType":"Parameters","parameter":[{"name":"coding","valueCoding":{"system":"http://loinc.org"}},{"name":"statistic","valueCode":"count"}]}`,
				`{"resourceType":"Parameters","parameter":[{"name":"nonsense","valueString":"x"}]}`,
				`{"resourceType":"Parameters"`,
			} {
				if st, o := e.do("clinician", "POST", "/Observation/$stats", bad); st != 400 || o["resourceType"] != "OperationOutcome" {
					t.Errorf("POST $stats %s: %d %v, want 400 with an OperationOutcome", bad, st, o)
				}
			}
			_, b = e.do("clinician", "GET", "/Observation/$stats?coding="+url.QueryEscape(painCode)+","+url.QueryEscape(hrCode)+"&statistic=count,maximum", "")
			if got := statsAnswer(t, b); got[painCode]["count"] != 90 || got[hrCode]["count"] != statsPatients || got[hrCode]["maximum"] != 60+statsPatients-1 {
				t.Errorf("two codings: %v", got)
			}

			// A research client sees the same population figures (values
			// are kept exactly), but never a cell of fewer than 11 patients.
			const A = "research:alpha"
			st, b = e.do(A, "GET", q, "")
			if st != 200 {
				t.Fatalf("research $stats: %d %v", st, b)
			}
			checkFigures(t, "research population", statsAnswer(t, b)[painCode], all)
			if raw := mustString(b); strings.Contains(raw, "sp0") || strings.Contains(raw, "Statsfamily") {
				t.Errorf("research $stats answer names a patient: %s", raw)
			}
			for _, sel := range []string{"&patient=Group/g-small", "&subject=Patient/sp03"} {
				// A research client names resources by pseudonym: the
				// stored id matches nothing and yields an empty (zero) cell.
				_, b = e.do(A, "GET", q+sel, "")
				if got := statsAnswer(t, b)[painCode]; got["count"] != 0 {
					t.Errorf("research %s by stored id: %v, want count 0", sel, got)
				}
			}
			pseudo := researchIDs(t, e, A)
			for _, sel := range []string{"&patient=Group/" + pseudo["Group/g-small"], "&subject=Patient/" + pseudo["Patient/sp03"]} {
				_, b = e.do(A, "GET", q+sel, "")
				if got := statsAnswer(t, b)[painCode]; !masked(got) {
					t.Errorf("research %s (under 11 patients): %v, want every statistic masked", sel, got)
				}
			}
			// Complementary suppression over cohorts: B (17 patients) is
			// shown; A (14, all in B) would give B minus A = 3 patients.
			_, b = e.do(A, "GET", q+"&patient=Group/"+pseudo["Group/g-b"], "")
			checkFigures(t, "research Group g-b", statsAnswer(t, b)[painCode], expected(values(func(o statsObs) bool { return o.patient < "sp17" })))
			_, b = e.do(A, "GET", q+"&patient=Group/"+pseudo["Group/g-a"], "")
			if got := statsAnswer(t, b)[painCode]; !masked(got) {
				t.Errorf("research Group g-a after g-b (difference of 3 patients): %v, want masked", got)
			}
			// Another project has no history: g-a is shown there, and then
			// g-b is the one withheld.
			pb := researchIDs(t, e, "research:beta")
			_, b = e.do("research:beta", "GET", q+"&patient=Group/"+pb["Group/g-a"], "")
			checkFigures(t, "beta Group g-a", statsAnswer(t, b)[painCode], expected(values(func(o statsObs) bool { return o.patient < "sp14" })))
			_, b = e.do("research:beta", "GET", q+"&patient=Group/"+pb["Group/g-b"], "")
			if got := statsAnswer(t, b)[painCode]; !masked(got) {
				t.Errorf("beta Group g-b after g-a: %v, want masked", got)
			}

			// Periods on the project's timeline: the test reads the
			// de-identified rows and computes the figures from them.
			testStatsPeriods(t, e, q)

			// Aggregates-only clients get statistics, never rows.
			const G = "aggregates:gamma"
			st, b = e.do(G, "GET", q, "")
			if st != 200 {
				t.Fatalf("aggregates $stats: %d %v", st, b)
			}
			checkFigures(t, "aggregates population", statsAnswer(t, b)[painCode], all)
			if st, _ := e.do(G, "GET", q+"&include=true", ""); st != 403 {
				t.Errorf("aggregates $stats include=true: %d, want 403", st)
			}
			// A rows client's sources are de-identified.
			st, b = e.do(A, "GET", q+"&include=true&limit=5", "")
			var sources []any
			for _, p := range b["parameter"].([]any) {
				if p.(map[string]any)["name"] == "source" {
					sources = append(sources, p.(map[string]any)["resource"])
				}
			}
			if raw := mustString(sources); st != 200 || len(sources) != 5 || regexp.MustCompile(`sp\d\d|-pain\d`).MatchString(raw) {
				t.Errorf("research sources: %d, %d sources: %s", st, len(sources), raw)
			}
			for _, bad := range []string{
				"/Observation/$stats?code=72514-3",
				"/Observation/$stats?code=72514-3&statistic=skew",
				"/Observation/$stats?statistic=count",
				"/Observation/$stats?code=72514-3&statistic=count&period=2024-13-01/",
				"/Observation/$stats?code=72514-3&statistic=count&period=2024-02-01/2024-01-01",
				"/Observation/$stats?code=72514-3&statistic=count&duration=-1",
				"/Observation/$stats?code=72514-3&statistic=count&subject=Device/x",
				"/Observation/$stats?code=72514-3&statistic=count&limit=0",
				"/Observation/$stats?code=72514-3&statistic=count&color=red",
			} {
				if st, o := e.do("clinician", "GET", bad, ""); st != 400 || o["resourceType"] != "OperationOutcome" {
					t.Errorf("%s: %d %v, want 400 OperationOutcome", bad, st, o)
				}
			}
			_, md := e.do("clinician", "GET", "/metadata", "")
			if !strings.Contains(mustString(md), `"definition":"http://anodyne-fhir.org/fhir/OperationDefinition/observation-stats","name":"stats"`) {
				t.Error("the CapabilityStatement does not declare $stats with our OperationDefinition")
			}
			if st, od := e.do(A, "GET", "/OperationDefinition/observation-stats", ""); st != 200 || od["url"] != "http://anodyne-fhir.org/fhir/OperationDefinition/observation-stats" {
				t.Errorf("our $stats OperationDefinition: %d %v", st, od["url"])
			}
			if st, _ := e.do("clinician", "GET", "/Observation/$stats?code=72514-3&statistic=count&patient=Group/nope", ""); st != 404 {
				t.Errorf("unknown Group: %d, want 404", st)
			}
		})
	}
}

// researchIDs reads, as the research client who, the pseudonyms of the
// seeded Patients and Groups ("Patient/sp03" -> pseudonym). The stored
// ids are recovered from what only the test knows: family names are
// removed, so patients are matched by their pain values.
func researchIDs(t *testing.T, e *env, who string) map[string]string {
	t.Helper()
	out := map[string]string{}
	// A patient's heart rate (60 + i) identifies it in this data set.
	for _, o := range readAll(t, e, who, "/Observation?code="+url.QueryEscape(hrCode)+"&_count=200") {
		ref := o["subject"].(map[string]any)["reference"].(string)
		v, _ := strconv.Atoi(string(o["valueQuantity"].(map[string]any)["value"].(json.Number)))
		out[fmt.Sprintf("Patient/sp%02d", v-60)] = strings.TrimPrefix(ref, "Patient/")
	}
	for _, g := range readAll(t, e, who, "/Group?_count=50") {
		n := len(g["member"].([]any))
		name := map[int]string{5: "Group/g-small", 14: "Group/g-a", 17: "Group/g-b"}[n]
		out[name] = g["id"].(string)
	}
	if len(out) != statsPatients+3 {
		t.Fatalf("recovered %d pseudonyms, want %d: %v", len(out), statsPatients+3, out)
	}
	return out
}

func readAll(t *testing.T, e *env, who, path string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for path != "" {
		st, b := e.do(who, "GET", path, "")
		if st != 200 {
			t.Fatalf("%s %s: %d %v", who, path, st, b)
		}
		out = append(out, entries(b)...)
		path = ""
		links, _ := b["link"].([]any)
		for _, l := range links {
			if l.(map[string]any)["relation"] == "next" {
				path = l.(map[string]any)["url"].(string)
			}
		}
	}
	return out
}

// testStatsPeriods: project delta asks for the whole timeline, then for
// the period that holds all but the last three patients (withheld: the
// whole minus it would be three patients), then a period of 12 patients
// against 18 others (shown, with figures computed from the rows).
func testStatsPeriods(t *testing.T, e *env, q string) {
	t.Helper()
	const D = "research:delta"
	type point struct {
		at      time.Time
		value   float64
		subject string
	}
	var pts []point
	for _, o := range readAll(t, e, D, "/Observation?code="+url.QueryEscape(painCode)+"&_count=200") {
		if o["status"] == "entered-in-error" {
			continue // never counted
		}
		at, err := time.Parse(time.RFC3339, o["effectiveDateTime"].(string))
		if err != nil {
			t.Fatal(err)
		}
		v, _ := strconv.ParseFloat(string(o["valueQuantity"].(map[string]any)["value"].(json.Number)), 64)
		pts = append(pts, point{at, v, o["subject"].(map[string]any)["reference"].(string)})
	}
	sort.Slice(pts, func(a, b int) bool { return pts[a].at.Before(pts[b].at) })
	// The latest reading of each patient, in time order.
	last := map[string]time.Time{}
	for _, p := range pts {
		last[p.subject] = p.at
	}
	var ends []time.Time
	for _, at := range last {
		ends = append(ends, at)
	}
	sort.Slice(ends, func(a, b int) bool { return ends[a].Before(ends[b]) })
	period := func(from, to time.Time) string {
		return "&period=" + url.QueryEscape(from.Format(time.RFC3339)+"/"+to.Format(time.RFC3339))
	}
	figures := func(from, to time.Time) (map[string]float64, int) {
		var v []float64
		who := map[string]bool{}
		for _, p := range pts {
			if !p.at.Before(from) && !p.at.After(to) {
				v = append(v, p.value)
				who[p.subject] = true
			}
		}
		return expected(v), len(who)
	}
	first, final := pts[0].at, pts[len(pts)-1].at
	_, b := e.do(D, "GET", q+period(first, final), "")
	want, _ := figures(first, final)
	checkFigures(t, "delta whole timeline", statsAnswer(t, b)[painCode], want)

	// Patients whose every reading lies before the cut are in [first,
	// cut]; the others straddle or follow. A patient's readings lie on
	// one day, so the cut just before the 27th patient's first reading of
	// its last day leaves 26 or 27 patients in and the rest (3 or 4) out.
	cut := ends[statsPatients-4].Add(time.Second)
	_, n := figures(first, cut)
	_, b = e.do(D, "GET", q+period(first, cut), "")
	if got := statsAnswer(t, b)[painCode]; !masked(got) {
		t.Errorf("delta period of %d patients whose complement in the released whole has %d: %v, want masked", n, statsPatients-n, got)
	}
	// 12 patients against 18: both atoms are large enough.
	cut = ends[11].Add(time.Second)
	want, n = figures(first, cut)
	if n < 11 || statsPatients-n < 11 {
		t.Fatalf("the test's cut splits %d/%d patients", n, statsPatients-n)
	}
	_, b = e.do(D, "GET", q+period(first, cut), "")
	checkFigures(t, "delta period of 12 patients", statsAnswer(t, b)[painCode], want)
}
