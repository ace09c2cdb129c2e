package subscription_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/subscription"
)

// BenchmarkObservationWrite is the cost of one Observation create over
// HTTP on SQLite with authorization on, with 0 to 1,000 active
// Subscriptions on Observation (of patient-context owners, so each also
// carries its owner's compartment filter), none of which matches: the
// cost of matching, not of delivering.
//
//	go test ./subscription -run '^$' -bench ObservationWrite -benchtime 300x
func BenchmarkObservationWrite(b *testing.B) {
	for _, n := range []int{0, 10, 100, 1000} {
		ps := map[string]*auth.Principal{
			"ehr": {ClientID: "ehr", Subject: "ehr", Scopes: auth.ParseScopes("system/*.cruds")},
			"app": {ClientID: "app", Subject: "dr", FHIRUser: "Practitioner/dr", Scopes: auth.ParseScopes("patient/Observation.rs user/Subscription.cruds"), Patient: "p1"},
		}
		s := start(b, backends()[0].open(b), ps, func(c *subscription.Config) { c.MaxPerClient = 10000 })
		for i := range n {
			crit := fmt.Sprintf("Observation?code=http://loinc.org|bench-%d&value-quantity=ge7", i)
			s.do(b, "app", "POST", "/Subscription", subscriptionJSON(crit, "http://127.0.0.1:9/hook", "")).expect(b, http.StatusCreated)
		}
		body := observation("", painCode, "p1", 8)
		b.Run(fmt.Sprintf("subscriptions=%d", n), func(b *testing.B) {
			for b.Loop() {
				s.do(b, "ehr", "POST", "/Observation", body).expect(b, http.StatusCreated)
			}
		})
	}
}
