package subscription_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/auth"
)

// TestOperationsAsBatchEntries takes the operations the service registers
// (Service.Operations, so an operation added there is covered) and asks
// each, with GET and POST, as an entry of a batch and over HTTP: an
// owner's entry answers as the request does (status, Bundle entries,
// Parameters names), and a caller whose Policy.Decide refuses reading
// Subscriptions is refused the entry with 403 as over HTTP.
func TestOperationsAsBatchEntries(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			ps := map[string]*auth.Principal{
				"ehr":  {ClientID: "ehr", Subject: "ehr", Scopes: auth.ParseScopes("system/*.cruds")},
				"none": {ClientID: "none", Subject: "none", Scopes: auth.ParseScopes("system/Patient.rs")},
			}
			s := start(t, be.Open(t), ps, nil)
			id := s.do(t, "ehr", "POST", "/Subscription", wsSubscription("full-resource")).Expect(t, http.StatusCreated).JSON(t)["id"].(string)
			s.do(t, "ehr", "PUT", "/Observation/e1", observation("e1", painCode, "p1", 6)).Expect(t, http.StatusCreated)
			ops := s.svc.Operations()
			if len(ops) == 0 {
				t.Fatal("the service registers no operations")
			}
			for _, op := range ops {
				for _, method := range []string{"GET", "POST"} {
					url := op.Type + "/" + id + "/$" + op.Name
					entry := func(as string) (string, map[string]any) {
						t.Helper()
						b := s.do(t, as, "POST", "", fmt.Sprintf(`{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":%q,"url":%q}}]}`, method, url)).
							Expect(t, http.StatusOK).JSON(t)
						res, _ := get(b, "entry", 0, "resource").(map[string]any)
						return fmt.Sprint(get(b, "entry", 0, "response", "status")), res
					}
					direct := s.do(t, "ehr", method, "/"+url, "")
					st, res := entry("ehr")
					if !strings.HasPrefix(st, fmt.Sprint(direct.Status)+" ") {
						t.Errorf("%s %s: entry %s, over HTTP %d: %s", method, url, st, direct.Status, direct.Body)
						continue
					}
					if direct.Status != http.StatusOK {
						t.Errorf("%s %s by the owner: %d: %s", method, url, direct.Status, direct.Body)
						continue
					}
					if g, w := shape(res), shape(direct.JSON(t)); g != w {
						t.Errorf("%s %s: entry answers %s, over HTTP %s", method, url, g, w)
					}
					s.do(t, "none", method, "/"+url, "").Expect(t, http.StatusForbidden)
					if st, _ := entry("none"); !strings.HasPrefix(st, "403") {
						t.Errorf("%s %s as an entry for a caller who may not read Subscriptions: %s, want 403", method, url, st)
					}
				}
			}
		})
	}
}

// shape is what two answers of one operation share: the resource type,
// the entries' fullUrls and resource types (the events), the parameter
// names (a binding token differs each time).
func shape(res map[string]any) string {
	var parts []string
	parts = append(parts, fmt.Sprint(res["resourceType"]))
	es, _ := res["entry"].([]any)
	for _, e := range es {
		m, _ := e.(map[string]any)
		fu := fmt.Sprint(m["fullUrl"])
		if strings.HasPrefix(fu, "urn:uuid:") {
			fu = "urn:uuid:*" // the status entry is numbered per answer
		}
		parts = append(parts, fu+" "+fmt.Sprint(get(m, "resource", "resourceType")))
	}
	var names []string
	pl, _ := res["parameter"].([]any)
	for _, p := range pl {
		names = append(names, fmt.Sprint(get(p, "name")))
	}
	slices.Sort(names)
	b, _ := json.Marshal(append(parts, names...))
	return string(b)
}
