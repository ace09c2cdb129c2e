package fhir_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/fhir"
)

// TestBundleAuthorization checks, with the real SMART policy and a
// patient-context token, that every entry of a transaction or batch is
// authorized on its own (after its references are resolved), that one
// refused entry fails a whole transaction, and that $everything and
// conditional matching stay inside the patient's compartment.
func TestBundleAuthorization(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			b := be.open(t)
			admin, c := twoPatients(t, b, "patient/Patient.rs patient/Observation.crus")
			count := func() int {
				r := admin.do("GET", "/Observation?_summary=count", "").expect(t, http.StatusOK).json(t)
				var n int
				fmt.Sscan(fmt.Sprint(r["total"]), &n)
				return n
			}
			own := postEntry("urn:uuid:0a000000-0000-4000-8000-000000000001", txObs("Patient/pa", "1"))
			other := postEntry("urn:uuid:0a000000-0000-4000-8000-000000000002", txObs("Patient/pb", "2"))

			c.do("POST", "", bundleJSON("transaction", own, other)).expect(t, http.StatusForbidden).outcome(t)
			if n := count(); n != 2 {
				t.Fatalf("a refused transaction left %d observations, want 2", n)
			}
			c.do("POST", "", bundleJSON("transaction", own)).expect(t, http.StatusOK)
			if n := count(); n != 3 {
				t.Fatalf("%d observations after the allowed transaction, want 3", n)
			}
			// A write whose reference is resolved inside the Bundle is judged
			// on the resolved reference: a new Patient is outside pa's access.
			c.do("POST", "", bundleJSON("transaction",
				postEntry("urn:uuid:0a000000-0000-4000-8000-000000000003", `{"resourceType":"Patient","name":[{"family":"New"}]}`),
			)).expect(t, http.StatusForbidden)

			r := c.do("POST", "", bundleJSON("batch", own, other)).expect(t, http.StatusOK).json(t)
			es := entries(r)
			if s0, s1 := fmt.Sprint(get(es[0], "response", "status")), fmt.Sprint(get(es[1], "response", "status")); !strings.HasPrefix(s0, "201") || !strings.HasPrefix(s1, "403") {
				t.Errorf("batch statuses %s, %s; want 201, 403", s0, s1)
			}
			if n := count(); n != 4 {
				t.Fatalf("%d observations after the batch, want 4", n)
			}

			// Conditional matching sees only the compartment: pb's reading is
			// invisible, so this conditional create makes pa's own copy.
			admin.do("PUT", "/Observation/o-pb", strings.Replace(obsFor("o-pb", "pb"), `"status"`, `"identifier":[{"system":"urn:x","value":"shared"}],"status"`, 1)).expect(t, http.StatusOK)
			mine := strings.Replace(txObs("Patient/pa", "3"), `"status"`, `"identifier":[{"system":"urn:x","value":"shared"}],"status"`, 1)
			c.do("POST", "/Observation", mine, "If-None-Exist: identifier=urn:x|shared").expect(t, http.StatusCreated)
			c.do("PUT", "/Observation?identifier=urn:x|shared", mine).expect(t, http.StatusOK)
			c.do("DELETE", "/Observation?identifier=urn:x|shared", "").expect(t, http.StatusForbidden)

			ev := c.do("GET", "/Patient/pa/$everything", "").expect(t, http.StatusOK)
			if strings.Contains(string(ev.body), "Patient/pb") || strings.Contains(string(ev.body), "Fampb") {
				t.Errorf("$everything of pa leaks pb: %s", ev.body)
			}
			if n := len(entries(ev.json(t))); n != 5 {
				t.Errorf("$everything of pa: %d entries, want 5 (Patient and 4 observations)", n)
			}
			c.do("GET", "/Patient/pb/$everything", "").expect(t, http.StatusForbidden)
			// Type level: every patient the caller may see, here only pa.
			all := c.do("GET", "/Patient/$everything", "").expect(t, http.StatusOK)
			if strings.Contains(string(all.body), "Fampb") || len(entries(all.json(t))) != 5 {
				t.Errorf("Patient/$everything for pa: %s", all.body)
			}
			if n := len(entries(admin.do("GET", "/Patient/$everything", "").expect(t, http.StatusOK).json(t))); n != 7 {
				t.Errorf("Patient/$everything without restriction: %d entries, want 7 (2 patients, 5 observations)", n)
			}

			// $lastn and $stats entries are decided like the requests: pa's
			// compartment holds its two code-1 readings (the transaction's
			// and the batch's), not pb's.
			admin.do("POST", "/Observation", txObs("Patient/pb", "1")).expect(t, http.StatusCreated)
			ops := []string{
				"Observation/$stats?coding=http://loinc.org|1&statistic=count",
				"Observation/$lastn?subject=Patient/pa&code=http://loinc.org|1&max=5",
				"Observation/$lastn?subject=Patient/pb&code=http://loinc.org|1&max=5",
			}
			var opEntries []string
			for _, u := range ops {
				opEntries = append(opEntries, fmt.Sprintf(`{"request":{"method":"GET","url":%q}}`, u))
			}
			es = entries(c.do("POST", "", bundleJSON("batch", opEntries...)).expect(t, http.StatusOK).json(t))
			if got := fmt.Sprint(get(es[0], "resource", "parameter", 0, "resource", "component", 0, "valueInteger")); got != "2" {
				t.Errorf("$stats entry for pa: count %s, want 2", got)
			}
			if got := fmt.Sprint(get(admin.do("GET", "/"+ops[0], "").expect(t, http.StatusOK).json(t), "parameter", 0, "resource", "component", 0, "valueInteger")); got != "3" {
				t.Errorf("$stats without restriction: count %s, want 3", got)
			}
			for i, want := range []int{2, 0} {
				if st := fmt.Sprint(get(es[i+1], "response", "status")); !strings.HasPrefix(st, "200") {
					t.Errorf("%s entry: %s", ops[i+1], st)
				}
				if n := len(entryList(get(es[i+1], "resource", "entry"))); n != want {
					t.Errorf("%s entry for pa: %d readings, want %d", ops[i+1], n, want)
				}
			}
			// Without the right to search Observations, the entries are refused.
			_, reg := parts(t)
			noObs := newServer(t, b, func(cfg *fhir.Config) {
				cfg.Authorizer = policy{auth.NewPolicy(reg)}
				cfg.Middleware = withPrincipal(&auth.Principal{Patient: "pa", Scopes: auth.ParseScopes("patient/Patient.rs")})
			})
			es = entries(noObs.do("POST", "", bundleJSON("batch", opEntries[:2]...)).expect(t, http.StatusOK).json(t))
			for i := range 2 {
				if st := fmt.Sprint(get(es[i], "response", "status")); !strings.HasPrefix(st, "403") {
					t.Errorf("%s entry without Observation scope: %s, want 403", ops[i], st)
				}
			}
		})
	}
}
