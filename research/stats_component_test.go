package research_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// TestStatsComponents: $stats of a component code (systolic and diastolic
// pressure of blood-pressure panels, 85354-9) takes the components'
// values, and those of Observations of that code recorded alone, for a
// clinician and (values kept by the default rules, 12 patients) for a
// research client; figures from the values the test wrote.
func TestStatsComponents(t *testing.T) {
	const systolic, diastolic, panel = "8480-6", "8462-4", "85354-9"
	for _, backend := range backendNames {
		t.Run(backend, func(t *testing.T) {
			e := startOn(t, backend, nil)
			want := map[string][]float64{}
			var entries []string
			put := func(res string, id string) {
				entries = append(entries, `{"resource":`+res+`,"request":{"method":"PUT","url":"`+id+`"}}`)
			}
			q := func(v float64) string {
				return fmt.Sprintf(`{"value":%v,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}`, v)
			}
			coding := func(c string) string { return `{"coding":[{"system":"http://loinc.org","code":"` + c + `"}]}` }
			for i := range 12 {
				p := fmt.Sprintf("bp%02d", i)
				put(`{"resourceType":"Patient","id":"`+p+`"}`, "Patient/"+p)
				sys, dia := float64(110+i), 70+float64(i)/2
				status := "final"
				if i == 11 {
					status = "entered-in-error" // never counted
				} else {
					want[systolic] = append(want[systolic], sys)
					want[diastolic] = append(want[diastolic], dia)
				}
				put(fmt.Sprintf(`{"resourceType":"Observation","id":"panel-%s","status":"%s","code":%s,"subject":{"reference":"Patient/%s"},
 "effectiveDateTime":"2024-05-%02dT09:00:00Z","component":[{"code":%s,"valueQuantity":%s},{"code":%s,"valueQuantity":%s}]}`,
					p, status, coding(panel), p, i+1, coding(systolic), q(sys), coding(diastolic), q(dia)), "Observation/panel-"+p)
				if i%2 == 0 { // a systolic reading of its own
					put(fmt.Sprintf(`{"resourceType":"Observation","id":"sys-%s","status":"final","code":%s,"subject":{"reference":"Patient/%s"},
 "effectiveDateTime":"2024-06-%02dT09:00:00Z","valueQuantity":%s}`, p, coding(systolic), p, i+1, q(sys+15)), "Observation/sys-"+p)
					want[systolic] = append(want[systolic], sys+15)
				}
			}
			if st, b := e.do("clinician", "POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[`+strings.Join(entries, ",")+`]}`); st != 200 {
				t.Fatalf("seed: %d %v", st, b)
			}
			for _, who := range []string{"clinician", "research:alpha"} {
				for _, code := range []string{systolic, diastolic} {
					st, b := e.do(who, "GET", "/Observation/$stats?code="+code+"&system="+url.QueryEscape("http://loinc.org")+"&statistic="+allStats, "")
					if st != 200 {
						t.Fatalf("%s $stats %s: %d %v", who, code, st, b)
					}
					checkFigures(t, who+" "+code, statsAnswer(t, b)["http://loinc.org|"+code], expected(want[code]))
				}
			}
			// The panel itself has no value of its own.
			_, b := e.do("clinician", "GET", "/Observation/$stats?code="+panel+"&system="+url.QueryEscape("http://loinc.org")+"&statistic=count", "")
			if got := statsAnswer(t, b)["http://loinc.org|"+panel]; got["count"] != 0 {
				t.Errorf("panel count %v, want 0", got)
			}
		})
	}
}
