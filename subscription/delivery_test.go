package subscription_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
	"github.com/anodyne-fhir/anodyne/subscription"
)

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestReceiverFailsThenRecovers: the receiver answers 503 and then times
// out for a while; the Subscription goes to error with the reason, every
// event arrives afterwards in commit order, and it is active again.
func TestReceiverFailsThenRecovers(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			rcv := newReceiver(t)
			var mu sync.Mutex
			attempts := 0
			rcv.fail = func(int, delivery) int {
				mu.Lock()
				defer mu.Unlock()
				attempts++
				switch {
				case attempts <= 3:
					return http.StatusServiceUnavailable
				case attempts == 4:
					time.Sleep(600 * time.Millisecond) // beyond the delivery timeout
					return http.StatusServiceUnavailable
				case attempts <= 6:
					return http.StatusInternalServerError
				}
				return 0
			}
			s := start(t, be.Open(t), nil, func(c *subscription.Config) {
				c.FailuresBeforeError = 3
				c.Timeout = 300 * time.Millisecond
			})
			sub := s.do(t, "", "POST", "/Subscription", subscriptionJSON("Observation?code="+painCode, rcv.ts.URL+"/hook", "application/fhir+json")).Expect(t, http.StatusCreated).JSON(t)
			id := sub["id"].(string)
			var want []string
			for i := range 4 {
				oid := fmt.Sprintf("o%d", i)
				s.do(t, "", "PUT", "/Observation/"+oid, observation(oid, painCode, "p1", i)).Expect(t, http.StatusCreated)
				want = append(want, "PUT /hook/Observation/"+oid)
			}
			waitFor(t, "status error", 10*time.Second, func() bool {
				r := s.do(t, "", "GET", "/Subscription/"+id, "").JSON(t)
				return r["status"] == "error" && r["error"] != nil
			})
			got := rcv.wait(t, "/hook", len(want), 20*time.Second, 200*time.Millisecond)
			if !slices.Equal(paths(got), want) {
				t.Fatalf("got\n%v\nwant (commit order)\n%v", paths(got), want)
			}
			waitFor(t, "status active again", 10*time.Second, func() bool {
				r := s.do(t, "", "GET", "/Subscription/"+id, "").JSON(t)
				return r["status"] == "active" && r["error"] == nil
			})
			mu.Lock()
			defer mu.Unlock()
			if attempts < 7+3 {
				t.Errorf("%d attempts; 6 failures and 4 deliveries need at least 10", attempts)
			}
		})
	}
}

// TestDeletedSubscriptionStops: events queued for an unreachable receiver
// are dropped when the Subscription is deleted, and none is sent after.
func TestDeletedSubscriptionStops(t *testing.T) {
	rcv := newReceiver(t)
	var mu sync.Mutex
	failing := true
	rcv.fail = func(int, delivery) int {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return http.StatusBadGateway
		}
		return 0
	}
	b := backends()[0].Open(t)
	s := start(t, b, nil, nil)
	sub := s.do(t, "", "POST", "/Subscription", subscriptionJSON("Observation?code="+painCode, rcv.ts.URL+"/hook", "")).Expect(t, http.StatusCreated).JSON(t)
	id := sub["id"].(string)
	for i := range 3 {
		s.do(t, "", "POST", "/Observation", observation("", painCode, "p1", i)).Expect(t, http.StatusCreated)
	}
	ob, _ := storage.As[storage.Outbox](b)
	queued := func() int {
		evs, err := ob.OutboxRead(context.Background(), "Subscription/"+id, 100)
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}
	if n := queued(); n != 3 {
		t.Fatalf("%d events queued, want 3", n)
	}
	s.do(t, "", "DELETE", "/Subscription/"+id, "").Expect(t, http.StatusNoContent)
	s.do(t, "", "POST", "/Observation", observation("", painCode, "p1", 9)).Expect(t, http.StatusCreated)
	mu.Lock()
	failing = false
	mu.Unlock()
	waitFor(t, "the stream dropped", 10*time.Second, func() bool { return queued() == 0 })
	time.Sleep(300 * time.Millisecond)
	if got := rcv.under("/hook"); len(got) != 0 {
		t.Fatalf("a deleted Subscription was delivered: %v", paths(got))
	}
}

// TestTwoProcessesOneDatabase: two servers with their own delivery loops
// on one FerretDB database; writes through both reach the receiver once
// each, in commit order.
func TestTwoProcessesOneDatabase(t *testing.T) {
	db := mongotest.Database(t)
	rcv := newReceiver(t)
	// No full reload within the test: the change check alone must tell.
	slow := func(c *subscription.Config) { c.Reload = time.Hour }
	a := start(t, openMongo(t, db), nil, slow)
	b := start(t, openMongo(t, db), nil, slow)
	a.do(t, "", "POST", "/Subscription", subscriptionJSON("Observation?code="+painCode, rcv.ts.URL+"/hook", "application/fhir+json")).Expect(t, http.StatusCreated)
	// The other process learns of the Subscription at its next check
	// (Check: 100ms here).
	time.Sleep(250 * time.Millisecond)
	var want []string
	for i := range 6 {
		s := a
		if i%2 == 1 {
			s = b
		}
		oid := fmt.Sprintf("two-%d", i)
		s.do(t, "", "PUT", "/Observation/"+oid, observation(oid, painCode, "p1", i)).Expect(t, http.StatusCreated)
		want = append(want, "PUT /hook/Observation/"+oid)
	}
	got := rcv.wait(t, "/hook", len(want), 20*time.Second, time.Second)
	if !slices.Equal(paths(got), want) {
		t.Fatalf("got\n%v\nwant each once, in commit order\n%v", paths(got), want)
	}
	ids := map[string]bool{}
	for _, d := range got {
		ids[d.Header.Get(subscription.HeaderEventID)] = true
	}
	if len(ids) != len(want) {
		t.Fatalf("%d event ids for %d deliveries", len(ids), len(want))
	}
}

// TestRefusedSubscriptionWriteNotifiesNothing: a transaction that creates
// a Subscription and then fails leaves no Subscription, and later writes
// notify nobody (the registry saw the Subscription before the Commit).
func TestRefusedSubscriptionWriteNotifiesNothing(t *testing.T) {
	rcv := newReceiver(t)
	s := start(t, backends()[0].Open(t), nil, nil)
	s.do(t, "", "PUT", "/Observation/x", observation("x", pulseCode, "p1", 1)).Expect(t, http.StatusCreated)
	tx := fmt.Sprintf(`{"resourceType":"Bundle","type":"transaction","entry":[
		{"fullUrl":"urn:uuid:5b1e8d6c-1a52-4e55-9d0f-2d0c3c1b7a11","resource":%s,"request":{"method":"POST","url":"Subscription"}},
		{"resource":%s,"request":{"method":"PUT","url":"Observation/x","ifMatch":"W/\"7\""}}]}`,
		subscriptionJSON("Observation?code="+painCode, rcv.ts.URL+"/hook", ""), observation("x", pulseCode, "p1", 2))
	if r := s.do(t, "", "POST", "", tx); r.Status < 400 {
		t.Fatalf("transaction with a stale If-Match answered %d", r.Status)
	}
	if b := s.do(t, "", "GET", "/Subscription", "").JSON(t); b["total"] != nil && fmt.Sprint(b["total"]) != "0" {
		t.Fatalf("a Subscription was stored: %v", b["total"])
	}
	for i := range 2 {
		s.do(t, "", "POST", "/Observation", observation("", painCode, "p1", i)).Expect(t, http.StatusCreated)
	}
	time.Sleep(500 * time.Millisecond)
	if got := rcv.under("/hook"); len(got) != 0 {
		t.Fatalf("a refused Subscription was notified: %v", paths(got))
	}
}

// TestBackportTimeout: backport-timeout bounds one notification attempt
// below Config.Timeout (2 s here): a receiver that takes 1.5 s to answer
// the first request is given up on after 1 s and the event is sent
// again (same event id); without the extension the first attempt
// succeeds. A timeout of 0 is refused (422).
func TestBackportTimeout(t *testing.T) {
	be := backends()[0]
	for _, c := range []struct {
		name    string
		timeout int // 0: no extension
		want    int
	}{{"backport-timeout 1", 1, 2}, {"none", 0, 1}} {
		t.Run(c.name, func(t *testing.T) {
			rcv := newReceiver(t)
			var mu sync.Mutex
			calls := 0
			slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				calls++
				n := calls
				mu.Unlock()
				if n == 1 {
					time.Sleep(1500 * time.Millisecond)
				}
				rcv.ts.Config.Handler.ServeHTTP(w, r)
			}))
			t.Cleanup(slow.Close)
			s := start(t, be.Open(t), nil, nil)
			body := subscriptionJSON("Observation?code="+painCode, slow.URL+"/hook", "")
			if c.timeout > 0 {
				body = strings.Replace(body, `"channel":{`, fmt.Sprintf(`"channel":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout","valueUnsignedInt":%d}],`, c.timeout), 1)
			}
			s.do(t, "", "POST", "/Subscription", body).Expect(t, http.StatusCreated)
			s.do(t, "", "PUT", "/Observation/o1", observation("o1", painCode, "p1", 8)).Expect(t, http.StatusCreated)
			got := rcv.wait(t, "/hook", c.want, 15*time.Second, 2*time.Second)
			if len(got) != c.want {
				t.Fatalf("%d requests reached the receiver, want %d", len(got), c.want)
			}
			if got[0].Header.Get(subscription.HeaderEventID) != got[len(got)-1].Header.Get(subscription.HeaderEventID) {
				t.Error("the retry carries another event id")
			}
		})
	}
	s := start(t, be.Open(t), nil, nil)
	zero := strings.Replace(subscriptionJSON("Observation?code="+painCode, "http://127.0.0.1:9/hook", ""), `"channel":{`, `"channel":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout","valueUnsignedInt":0}],`, 1)
	s.do(t, "", "POST", "/Subscription", zero).Expect(t, http.StatusUnprocessableEntity)
}
