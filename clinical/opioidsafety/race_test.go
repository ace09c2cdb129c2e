package opioidsafety_test

import (
	"encoding/json"
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

// TestConcurrentOpioidAndBenzodiazepine: an opioid and a benzodiazepine
// ordered at the same moment each alone raise nothing; together they
// overlap. The patient's Commits are serialized, so the second one
// observed sees the first and raises the issue.
func TestConcurrentOpioidAndBenzodiazepine(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			s := start(t, be.Open(t), nil)
			const patients = 4
			var wg sync.WaitGroup
			for i := 0; i < patients; i++ {
				p := fmt.Sprintf("p%d", i)
				s.do(t, "PUT", "/fhir/Patient/"+p, patient(p)).Expect(t, 201)
				for _, body := range []string{
					mr("oxy-"+p, p, "active", "1049621", "oxycodone 5 MG", 1, 6),
					mr("benzo-"+p, p, "active", "596", "alprazolam", 1, 8),
				} {
					wg.Add(1)
					go func(id, body string) {
						defer wg.Done()
						if r := s.do(t, "PUT", "/fhir/MedicationRequest/"+id, body); r.Status != 201 {
							t.Errorf("%s: %d %s", id, r.Status, r.Body)
						}
					}(get(decodeJSON(t, body), "id").(string), body)
				}
			}
			wg.Wait()
			for i := 0; i < patients; i++ {
				_, benzoID := opioidsafety.IssueIDs(fmt.Sprintf("p%d", i))
				if is, ok := readIssue(t, s, benzoID); !ok || is.status != "final" || len(is.implicated) != 2 {
					t.Errorf("DetectedIssue/%s after a concurrent opioid and benzodiazepine: %+v (found %v)", benzoID, is, ok)
				}
			}
		})
	}
}

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestOpioidAndBenzodiazepineOnTwoServers: the opioid goes to one server
// and the benzodiazepine to another sharing the store, at the same moment,
// for several patients. Each alone raises nothing; the patient's Commits
// take turns across the servers (fhir.CommitSet.Serialize leases), so the
// later one observed sees the other and raises the overlap.
func TestOpioidAndBenzodiazepineOnTwoServers(t *testing.T) {
	for _, st := range env.SharedStores() {
		t.Run(st.Name, func(t *testing.T) {
			stores := st.Open(t)
			a, b := start(t, stores[0], nil), start(t, stores[1], nil)
			const patients = 4
			var wg sync.WaitGroup
			for i := 0; i < patients; i++ {
				p := fmt.Sprintf("p%d", i)
				a.do(t, "PUT", "/fhir/Patient/"+p, patient(p)).Expect(t, 201)
				for j, body := range []string{
					mr("oxy-"+p, p, "active", "1049621", "oxycodone 5 MG", 1, 6),
					mr("benzo-"+p, p, "active", "596", "alprazolam", 1, 8),
				} {
					srv := []*server{a, b}[j]
					wg.Add(1)
					go func(id, body string) {
						defer wg.Done()
						if r := srv.do(t, "PUT", "/fhir/MedicationRequest/"+id, body); r.Status != 201 {
							t.Errorf("%s: %d %s", id, r.Status, r.Body)
						}
					}(get(decodeJSON(t, body), "id").(string), body)
				}
			}
			wg.Wait()
			for i := 0; i < patients; i++ {
				_, benzoID := opioidsafety.IssueIDs(fmt.Sprintf("p%d", i))
				if is, ok := readIssue(t, b, benzoID); !ok || is.status != "final" || len(is.implicated) != 2 {
					t.Errorf("DetectedIssue/%s after an opioid on one server and a benzodiazepine on another: %+v (found %v)", benzoID, is, ok)
				}
			}
		})
	}
}
