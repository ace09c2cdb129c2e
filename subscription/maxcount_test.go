package subscription_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// withMaxCount adds backport-max-count (a valuePositiveInt, raw JSON) to
// a Subscription's channel.
func withMaxCount(sub, value string) string {
	return withMaxCountAs(sub, "valuePositiveInt", value)
}

func withMaxCountAs(sub, key, value string) string {
	return strings.Replace(sub, `"channel":{`, `"channel":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-max-count",`+fmt.Sprintf("%q", key)+`:`+value+`}],`, 1)
}

// TestBackportMaxCount: with backport-max-count 3, the events that
// queued while the receiver was down (503s) arrive once it recovers in
// notifications of at most 3 events each, every event once, in commit
// order, numbered 1..n in order with events-since-subscription-start the
// last number of each notification; a batch of exactly 3 shows they were
// combined. A max-count that is not a positive integer is refused: 400
// when it is not a valid positiveInt (the datatype check, before any
// Subscription rule), 422 when it is not a valuePositiveInt at all.
func TestBackportMaxCount(t *testing.T) {
	const topic = "http://anodyne-fhir.org/fhir/SubscriptionTopic/pain-score"
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			rcv := newReceiver(t)
			var down atomic.Bool
			rcv.fail = func(int, delivery) int {
				if down.Load() {
					return http.StatusServiceUnavailable
				}
				return 0
			}
			s := start(t, be.Open(t), nil, nil)
			bad := func(key, value string, status int) {
				t.Helper()
				s.do(t, "", "POST", "/Subscription", withMaxCountAs(topicSubscription(topic, "", "id-only", rcv.ts.URL+"/bad"), key, value)).Expect(t, status)
			}
			for _, v := range []string{"0", "-2", "1.5", `"3"`} {
				bad("valuePositiveInt", v, http.StatusBadRequest)
			}
			bad("valueUnsignedInt", "0", http.StatusUnprocessableEntity)
			bad("valueUnsignedInt", "3", http.StatusUnprocessableEntity)
			bad("valueString", `"3"`, http.StatusUnprocessableEntity)
			sub := s.do(t, "", "POST", "/Subscription", withMaxCount(topicSubscription(topic, "", "id-only", rcv.ts.URL+"/mc"), "3")).Expect(t, http.StatusCreated).JSON(t)
			rcv.wait(t, "/mc", 1, 10*time.Second, 0) // the handshake
			down.Store(true)
			const n = 7
			var want []string
			for i := 1; i <= n; i++ {
				id := fmt.Sprintf("m%d", i)
				s.do(t, "", "PUT", "/Observation/"+id, observation(id, painCode, "p1", i)).Expect(t, http.StatusCreated)
				want = append(want, s.Root+"/fhir/Observation/"+id)
			}
			time.Sleep(300 * time.Millisecond) // a few refused attempts
			down.Store(false)

			var got []string
			var numbers []int
			largest := 0
			deadline := time.Now().Add(20 * time.Second)
			for len(got) < n && time.Now().Before(deadline) {
				got, numbers, largest = nil, nil, 0
				for _, b := range ofType(t, rcv.under("/mc"), "event-notification") {
					st := get(b, "entry", 0, "resource")
					var last int
					count := 0
					for _, p := range get(st, "parameter").([]any) {
						if get(p, "name") != "notification-event" {
							continue
						}
						num, _ := strconv.Atoi(param(map[string]any{"parameter": get(p, "part")}, "event-number").(string))
						numbers = append(numbers, num)
						last = num
						count++
					}
					if since := param(st, "events-since-subscription-start"); since != strconv.Itoa(last) {
						t.Errorf("events-since-subscription-start %v, last event number %d", since, last)
					}
					entries := get(b, "entry").([]any)
					if len(entries) != count+1 {
						t.Errorf("%d focus entries for %d events", len(entries)-1, count)
					}
					for _, e := range entries[1:] {
						got = append(got, get(e, "fullUrl").(string))
					}
					largest = max(largest, count)
				}
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond)
			if total := len(ofType(t, rcv.under("/mc"), "event-notification")); len(got) != n {
				t.Fatalf("%d events in %d notifications, want %d: %v", len(got), total, n, got)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("events %v, want in commit order %v", got, want)
			}
			for i, num := range numbers {
				if num != i+1 {
					t.Errorf("event numbers %v, want 1..%d", numbers, n)
					break
				}
			}
			if largest != 3 {
				t.Errorf("the largest notification carried %d events, want max-count 3", largest)
			}
			for _, d := range rcv.under("/mc") {
				checkSigned(t, d, secretOf(t, sub), "Subscription/"+sub["id"].(string))
			}
		})
	}
}
