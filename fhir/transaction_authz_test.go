package fhir_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
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
		})
	}
}
