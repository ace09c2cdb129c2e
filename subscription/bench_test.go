package subscription_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"sync"
	"testing"
	"time"

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
		s := start(b, backends()[0].Open(b), ps, func(c *subscription.Config) { c.MaxPerClient = 10000 })
		for i := range n {
			crit := fmt.Sprintf("Observation?code=http://loinc.org|bench-%d&value-quantity=ge7", i)
			s.do(b, "app", "POST", "/Subscription", subscriptionJSON(crit, "http://127.0.0.1:9/hook", "")).Expect(b, http.StatusCreated)
		}
		body := observation("", painCode, "p1", 8)
		b.Run(fmt.Sprintf("subscriptions=%d", n), func(b *testing.B) {
			for b.Loop() {
				s.do(b, "ehr", "POST", "/Observation", body).Expect(b, http.StatusCreated)
			}
		})
	}
}

// BenchmarkDeliveryLatency writes pain scores at about 100 per second
// (SQLite, one rest-hook Subscription with full payloads, default poll
// and reload settings) and reports the time from each write's answer to
// its notification's arrival at a local receiver: p50 and p99 in ms. Run
// it with -benchtime 1x; each run writes 300 Observations.
//
//	go test ./subscription -run '^$' -bench DeliveryLatency -benchtime 1x
func BenchmarkDeliveryLatency(b *testing.B) {
	const writes, rate = 300, 100
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrived[path.Base(r.URL.Path)] = time.Now()
		mu.Unlock()
	}))
	defer rcv.Close()
	s := start(b, backends()[0].Open(b), nil, func(c *subscription.Config) {
		*c = subscription.Config{Backend: c.Backend, AllowLoopback: true, Logger: c.Logger}
	})
	s.do(b, "", "POST", "/Subscription", subscriptionJSON("Observation?code="+painCode, rcv.URL+"/hook", "application/fhir+json")).Expect(b, http.StatusCreated)
	var lat []time.Duration
	for b.Loop() {
		acked := map[string]time.Time{}
		tick := time.NewTicker(time.Second / rate)
		for i := range writes {
			<-tick.C
			id := fmt.Sprintf("lat-%d-%d", len(lat), i)
			s.do(b, "", "PUT", "/Observation/"+id, observation(id, painCode, "p1", i%10)).Expect(b, http.StatusCreated)
			acked[id] = time.Now()
		}
		tick.Stop()
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			n := 0
			for id := range acked {
				if _, ok := arrived[id]; ok {
					n++
				}
			}
			mu.Unlock()
			if n == len(acked) {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d notifications arrived", n, len(acked))
			}
			time.Sleep(20 * time.Millisecond)
		}
		mu.Lock()
		for id, at := range acked {
			lat = append(lat, max(arrived[id].Sub(at), 0))
		}
		mu.Unlock()
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
}
