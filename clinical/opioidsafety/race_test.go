package opioidsafety_test

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/anodyne-fhir/anodyne/clinical/opioidsafety"
)

// TestConcurrentPrescriptionsOnePatient: prescriptions for one patient
// written at the same moment each rewrite the patient's MME DetectedIssue;
// the Commits that lose the race on it are observed again (fhir.Server
// commit), so every write succeeds and the issue names every request.
func TestConcurrentPrescriptionsOnePatient(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			s := start(t, be.Open(t), nil)
			s.do(t, "PUT", "/fhir/Patient/p", patient("p")).Expect(t, 201)
			// oxycodone 5 mg, 2 tablets every 4 h: 2 × 5 mg × 6/day × 1.5 = 90 MME/day
			// each, so that every write alone already changes the issue.
			const n = 6
			each := 2 * 5.0 * 6 * 1.5
			var wg sync.WaitGroup
			statuses := make([]int, n)
			ids := make([]string, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					body := strings.Replace(mr("x", "p", "active", "1049621", "oxycodone 5 MG", 2, 4), `"id":"x",`, "", 1)
					r := s.do(t, "POST", "/fhir/MedicationRequest", body)
					statuses[i] = r.Status
					if r.Status != 201 {
						t.Logf("create %d: %s", i, r.Body)
						return
					}
					ids[i] = get(r.JSON(t), "id").(string)
				}(i)
			}
			wg.Wait()
			for i, st := range statuses {
				if st != 201 {
					t.Errorf("create %d: status %d, want 201", i, st)
				}
			}
			mmeID, _ := opioidsafety.IssueIDs("p")
			is, ok := readIssue(t, s, mmeID)
			if !ok || is.status != "final" || is.severity != "high" {
				t.Fatalf("DetectedIssue/%s: %+v (found %v)", mmeID, is, ok)
			}
			sort.Strings(is.implicated)
			var want []string
			for _, id := range ids {
				want = append(want, "MedicationRequest/"+id)
			}
			sort.Strings(want)
			if strings.Join(is.implicated, ",") != strings.Join(want, ",") {
				t.Errorf("implicated %v, want %v", is.implicated, want)
			}
			r := s.do(t, "GET", "/fhir/DetectedIssue/"+mmeID, "").Expect(t, 200).JSON(t)
			if code, _ := get(r, "code", "text").(string); !strings.Contains(code, fmt.Sprintf("%v MME/day", each*n)) {
				t.Errorf("issue code %q, want the total %v MME/day", code, each*n)
			}
		})
	}
}
