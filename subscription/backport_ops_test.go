package subscription_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// withHeartbeat adds backport-heartbeat-period (seconds) to a
// Subscription's channel.
func withHeartbeat(sub string, seconds int) string {
	return strings.Replace(sub, `"channel":{`, fmt.Sprintf(`"channel":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period","valueUnsignedInt":%d}],`, seconds), 1)
}

// notificationType is SubscriptionStatus.type of a notification Bundle.
func notificationType(t *testing.T, body []byte) (string, map[string]any) {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatalf("notification is not JSON: %v", err)
	}
	st := get(b, "entry", 0, "resource")
	typ, _ := param(st, "type").(string)
	return typ, b
}

// ofType keeps the deliveries whose SubscriptionStatus.type is typ.
func ofType(t *testing.T, ds []delivery, typ string) []map[string]any {
	var out []map[string]any
	for _, d := range ds {
		if k, b := notificationType(t, d.Body); k == typ {
			out = append(out, b)
		}
	}
	return out
}

// TestBackportHandshakeStatusEvents: a topic-based rest-hook Subscription
// is requested until its endpoint took the handshake, then active; its
// events are numbered, $status reports the count, $events replays a
// range with the asked content, heartbeats come after heartbeatPeriod of
// silence, and the CapabilityStatement lists the topics, operations and
// websocket URL.
func TestBackportHandshakeStatusEvents(t *testing.T) {
	const topics = "http://anodyne-fhir.org/fhir/SubscriptionTopic/"
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			rcv := newReceiver(t)
			s := start(t, be.Open(t), nil, nil)
			body := withHeartbeat(topicSubscription(topics+"pain-score", "Observation?patient=Patient/p1", "id-only", rcv.ts.URL+"/hs"), 1)
			sub := s.do(t, "", "POST", "/Subscription", body).Expect(t, http.StatusCreated).JSON(t)
			id := sub["id"].(string)
			if sub["status"] != "requested" {
				t.Fatalf("created status %v, want requested until the handshake", sub["status"])
			}
			first := rcv.wait(t, "/hs", 1, 10*time.Second, 0)[0]
			checkSigned(t, first, secretOf(t, sub), "Subscription/"+id)
			typ, hb := notificationType(t, first.Body)
			st := get(hb, "entry", 0, "resource")
			if typ != "handshake" || param(st, "events-since-subscription-start") != "0" || param(st, "status") != "requested" || len(get(hb, "entry").([]any)) != 1 {
				t.Fatalf("first notification is not a handshake: %s", first.Body)
			}
			deadline := time.Now().Add(10 * time.Second)
			for s.do(t, "", "GET", "/Subscription/"+id, "").Expect(t, http.StatusOK).JSON(t)["status"] != "active" {
				if time.Now().After(deadline) {
					t.Fatal("Subscription not active after its handshake was accepted")
				}
				time.Sleep(50 * time.Millisecond)
			}

			var written []string // ids of the matching writes, in order
			for i := range 3 {
				oid := fmt.Sprintf("pain-%d", i)
				s.do(t, "", "PUT", "/Observation/"+oid, observation(oid, painCode, "p1", 5+i)).Expect(t, http.StatusCreated)
				written = append(written, oid)
				s.do(t, "", "PUT", "/Observation/other-"+oid, observation("other-"+oid, painCode, "p2", 5+i)).Expect(t, http.StatusCreated)
			}
			deadline = time.Now().Add(15 * time.Second)
			for len(ofType(t, rcv.under("/hs"), "event-notification")) < 3 {
				if time.Now().After(deadline) {
					t.Fatalf("events: %v", paths(rcv.under("/hs")))
				}
				time.Sleep(50 * time.Millisecond)
			}
			evs := ofType(t, rcv.under("/hs"), "event-notification")
			for i, b := range evs {
				if n := param(get(b, "entry", 0, "resource"), "events-since-subscription-start"); n != fmt.Sprint(i+1) {
					t.Errorf("event %d numbered %v", i, n)
				}
				if fu := get(b, "entry", 1, "fullUrl"); fu != s.Base+"/Observation/"+written[i] {
					t.Errorf("event %d focus %v, want %s", i, fu, written[i])
				}
			}

			status := s.do(t, "", "GET", "/Subscription/"+id+"/$status", "").Expect(t, http.StatusOK).JSON(t)
			sp := get(status, "entry", 0, "resource")
			if status["type"] != "searchset" || param(sp, "type") != "query-status" || param(sp, "events-since-subscription-start") != "3" || param(sp, "status") != "active" || param(sp, "topic") != topics+"pain-score" {
				t.Errorf("$status: %v", status)
			}
			s.do(t, "", "POST", "/Subscription/"+id+"/$status", "").Expect(t, http.StatusOK)

			replay := s.do(t, "", "GET", "/Subscription/"+id+"/$events?eventsSinceNumber=2&eventsUntilNumber=3&content=full-resource", "").Expect(t, http.StatusOK).JSON(t)
			rp := get(replay, "entry", 0, "resource")
			if replay["type"] != "history" || param(rp, "type") != "query-event" {
				t.Fatalf("$events: %v", replay)
			}
			var nums, ids []string
			for _, p := range get(rp, "parameter").([]any) {
				if get(p, "name") == "notification-event" {
					nums = append(nums, param(map[string]any{"parameter": get(p, "part")}, "event-number").(string))
				}
			}
			for _, e := range get(replay, "entry").([]any)[1:] {
				ids = append(ids, get(e, "resource", "id").(string))
			}
			if !slices.Equal(nums, []string{"2", "3"}) || !slices.Equal(ids, written[1:]) {
				t.Errorf("$events 2..3: numbers %v, resources %v; want [2 3], %v", nums, ids, written[1:])
			}
			all := s.do(t, "", "GET", "/Subscription/"+id+"/$events", "").Expect(t, http.StatusOK).JSON(t)
			if n := len(get(all, "entry").([]any)); n != 4 || get(all, "entry", 1, "resource") != nil {
				t.Errorf("$events default: %d entries (want the status and 3 id-only events): %v", n, all)
			}
			s.do(t, "", "GET", "/Subscription/"+id+"/$events?eventsSinceNumber=x", "").Expect(t, http.StatusBadRequest)
			s.do(t, "", "GET", "/Subscription/"+id+"/$events?content=everything", "").Expect(t, http.StatusBadRequest)
			s.do(t, "", "GET", "/Subscription/nope/$status", "").Expect(t, http.StatusNotFound)

			// Silence after the last event: a heartbeat within a few
			// seconds, with the count (heartbeats may also fall between
			// events on a slow store).
			var hbt map[string]any
			deadline = time.Now().Add(10 * time.Second)
			for hbt == nil {
				if time.Now().After(deadline) {
					t.Fatalf("no heartbeat after the last event: %v", paths(rcv.under("/hs")))
				}
				time.Sleep(100 * time.Millisecond)
				seen := 0
				for _, d := range rcv.under("/hs") {
					k, b := notificationType(t, d.Body)
					if k == "event-notification" {
						seen++
					}
					if k == "heartbeat" && seen == 3 {
						hbt = b
					}
				}
			}
			if param(get(hbt, "entry", 0, "resource"), "events-since-subscription-start") != "3" || len(get(hbt, "entry").([]any)) != 1 {
				t.Errorf("heartbeat %v", hbt)
			}

			cs := s.do(t, "", "GET", "/metadata", "").Expect(t, http.StatusOK).JSON(t)
			var subRes map[string]any
			for _, r := range get(cs, "rest", 0, "resource").([]any) {
				if get(r, "type") == "Subscription" {
					subRes = r.(map[string]any)
				}
			}
			var canon, ops []string
			for _, e := range subRes["extension"].([]any) {
				if get(e, "url") == "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical" {
					canon = append(canon, get(e, "valueCanonical").(string))
				}
			}
			for _, o := range subRes["operation"].([]any) {
				ops = append(ops, get(o, "name").(string))
			}
			wantTopics := []string{topics + "flag-raised", topics + "pain-score", topics + "vital-sign-out-of-range"}
			if !slices.Equal(canon, wantTopics) {
				t.Errorf("topics in the CapabilityStatement %v, want %v", canon, wantTopics)
			}
			for _, op := range []string{"status", "events", "get-ws-binding-token"} {
				if !slices.Contains(ops, op) {
					t.Errorf("operation %s not declared on Subscription: %v", op, ops)
				}
			}
			if ws := get(cs, "rest", 0, "extension", 0); get(ws, "url") != "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket" || get(ws, "valueUri") != "ws"+strings.TrimPrefix(s.Root, "http")+"/fhir/ws" {
				t.Errorf("websocket extension %v", ws)
			}
			def := s.do(t, "", "GET", "/OperationDefinition/backport-subscription-events", "").Expect(t, http.StatusOK).JSON(t)
			if def["url"] != "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events" {
				t.Errorf("OperationDefinition %v", def)
			}
		})
	}
}
