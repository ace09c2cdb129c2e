package subscription_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/clinical/rpm"
)

func spo2(id, patient string, h int, value int) string {
	return fmt.Sprintf(`{"resourceType":"Observation","id":%q,"status":"final",
		"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
		"code":{"coding":[{"system":"http://loinc.org","code":"59408-5"}]},"subject":{"reference":"Patient/%s"},
		"effectiveDateTime":%q,"valueQuantity":{"value":%d,"unit":"%%","system":"http://unitsofmeasure.org","code":"%%"}}`,
		id, patient, time.Date(2026, 12, 1, 8+h, 0, 0, 0, time.UTC).Format(time.RFC3339), value)
}

// TestFlagStatusCriteria: Flag status, which R4 core does not define, is
// a server-defined search parameter: listed in the CapabilityStatement,
// searchable, and usable as Subscription criteria (Flag?status=active,
// the example). The Flag comes from the remote-monitoring rules
// (two low SpO2 readings raise it, normal ones make it inactive) and one
// more is POSTed directly; the receiver hears of exactly the active
// versions, which the Flags' own histories list.
func TestFlagStatusCriteria(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			obs, err := rpm.NewDefaultObserver(slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			rcv := newReceiver(t)
			s := startObserved(t, be.Open(t), nil, nil, obs)

			cs := s.do(t, "", "GET", "/metadata", "").Expect(t, http.StatusOK).JSON(t)
			var def any
			for _, r := range get(cs, "rest", 0, "resource").([]any) {
				if get(r, "type") == "Flag" {
					for _, p := range get(r, "searchParam").([]any) {
						if get(p, "name") == "status" {
							def = get(p, "definition")
						}
					}
				}
			}
			if def != "http://anodyne-fhir.org/fhir/SearchParameter/Flag-status" {
				t.Fatalf("CapabilityStatement Flag status definition %v", def)
			}

			sub := s.do(t, "", "POST", "/Subscription", subscriptionJSON("Flag?status=active", rcv.ts.URL+"/flags", "application/fhir+json")).Expect(t, http.StatusCreated).JSON(t)
			if sub["status"] != "active" {
				t.Fatalf("Subscription status %v", sub["status"])
			}
			s.do(t, "", "PUT", "/Patient/p1", `{"resourceType":"Patient","id":"p1"}`).Expect(t, http.StatusCreated)
			for i, v := range []int{88, 89, 98, 98, 98} {
				s.do(t, "", "PUT", fmt.Sprintf("/Observation/o%d", i), spo2(fmt.Sprintf("o%d", i), "p1", i, v)).Expect(t, http.StatusCreated)
			}
			flagJSON := func(id, status string) string {
				return fmt.Sprintf(`{"resourceType":"Flag","id":%q,"status":%q,"code":{"text":"call the patient"},"subject":{"reference":"Patient/p1"}}`, id, status)
			}
			s.do(t, "", "PUT", "/Flag/direct-inactive", flagJSON("direct-inactive", "inactive")).Expect(t, http.StatusCreated)
			s.do(t, "", "PUT", "/Flag/direct-active", flagJSON("direct-active", "active")).Expect(t, http.StatusCreated)

			// The expected notifications: every active version of every Flag.
			all := s.do(t, "", "GET", "/Flag?_count=100", "").Expect(t, http.StatusOK).JSON(t)
			var want, activeNow []string
			sawInactive, fromRules := false, 0
			for _, e := range get(all, "entry").([]any) {
				id := get(e, "resource", "id").(string)
				if get(e, "resource", "status") == "active" {
					activeNow = append(activeNow, id)
				}
				if !strings.HasPrefix(id, "direct-") {
					fromRules++
				}
				hist := s.do(t, "", "GET", "/Flag/"+id+"/_history", "").Expect(t, http.StatusOK).JSON(t)
				for _, h := range get(hist, "entry").([]any) {
					if get(h, "resource", "status") == "active" {
						want = append(want, fmt.Sprintf("%s/%s", id, get(h, "resource", "meta", "versionId")))
					} else {
						sawInactive = true
					}
				}
			}
			if fromRules != 1 || !sawInactive || len(want) < 2 {
				t.Fatalf("the rules raised %d Flags; active versions %v, an inactive one: %v", fromRules, want, sawInactive)
			}
			// The search itself: only the Flags active now.
			found := s.do(t, "", "GET", "/Flag?status=active", "").Expect(t, http.StatusOK).JSON(t)
			var gotActive []string
			for _, e := range get(found, "entry").([]any) {
				gotActive = append(gotActive, get(e, "resource", "id").(string))
			}
			slices.Sort(activeNow)
			slices.Sort(gotActive)
			if !slices.Equal(gotActive, activeNow) || !slices.Contains(gotActive, "direct-active") {
				t.Errorf("Flag?status=active found %v, the active Flags are %v", gotActive, activeNow)
			}

			ds := rcv.wait(t, "/flags", len(want), 15*time.Second, 500*time.Millisecond)
			var got []string
			for _, d := range ds {
				var f map[string]any
				if err := json.Unmarshal(d.Body, &f); err != nil {
					t.Fatal(err)
				}
				if f["status"] != "active" || d.Path != "/flags/Flag/"+f["id"].(string) {
					t.Errorf("notified %s with a %v Flag", d.Path, f["status"])
				}
				got = append(got, fmt.Sprintf("%s/%s", f["id"], get(f, "meta", "versionId")))
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("notified %v, want the active versions %v", got, want)
			}
		})
	}
}
