package subscription_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func topicSubscription(topic, filter, content, endpoint string) string {
	crit := ""
	if filter != "" {
		crit = fmt.Sprintf(`,"_criteria":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria","valueString":%q}]}`, filter)
	}
	return fmt.Sprintf(`{"resourceType":"Subscription","meta":{"profile":["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"]},
		"status":"requested","reason":"backport","criteria":%q%s,
		"channel":{"type":"rest-hook","endpoint":%q,"payload":"application/fhir+json","header":["Authorization: Bearer receiver-token"],
		"_payload":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content","valueCode":%q}]}}}`, topic, crit, endpoint, content)
}

// param returns the value (or parts) of a named parameter.
func param(params any, name string) any {
	for _, p := range get(params, "parameter").([]any) {
		if get(p, "name") == name {
			if parts := get(p, "part"); parts != nil {
				return map[string]any{"parameter": parts}
			}
			for k, v := range p.(map[string]any) {
				if strings.HasPrefix(k, "value") {
					return v
				}
			}
		}
	}
	return nil
}

// TestBackportTopics: topic-based Subscriptions (R5 Backport for R4):
// pain-score narrowed to one patient with id-only payloads, flag-raised
// with full resources; the notifications are history Bundles with the
// SubscriptionStatus Parameters first and numbered events.
func TestBackportTopics(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			rcv := newReceiver(t)
			s := start(t, be.Open(t), nil, nil)
			const topics = "http://anodyne-fhir.org/fhir/SubscriptionTopic/"
			pain := s.do(t, "", "POST", "/Subscription", topicSubscription(topics+"pain-score", "Observation?patient=Patient/p1", "id-only", rcv.ts.URL+"/pain")).Expect(t, http.StatusCreated).JSON(t)
			flag := s.do(t, "", "POST", "/Subscription", topicSubscription(topics+"flag-raised", "", "full-resource", rcv.ts.URL+"/flag")).Expect(t, http.StatusCreated).JSON(t)
			s.do(t, "", "POST", "/Subscription", topicSubscription(topics+"no-such-topic", "", "id-only", rcv.ts.URL+"/x")).Expect(t, http.StatusUnprocessableEntity)
			s.do(t, "", "POST", "/Subscription", topicSubscription(topics+"pain-score", "Flag?patient=p1", "id-only", rcv.ts.URL+"/x")).Expect(t, http.StatusUnprocessableEntity)
			s.do(t, "", "POST", "/Subscription", topicSubscription(topics+"pain-score", "", "everything", rcv.ts.URL+"/x")).Expect(t, http.StatusUnprocessableEntity)

			vital := s.do(t, "", "POST", "/Subscription", topicSubscription(topics+"vital-sign-out-of-range", "", "empty", rcv.ts.URL+"/vital")).Expect(t, http.StatusCreated).JSON(t)
			if n := len(s.svc.Topics()); n != 3 {
				t.Errorf("%d topics served, want 3", n)
			}
			interpreted := func(id, code string) string {
				return strings.Replace(observation(id, pulseCode, "p1", 120), `"status":"final",`, `"status":"final","interpretation":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation","code":"`+code+`"}]}],`, 1)
			}
			s.do(t, "", "PUT", "/Observation/hr-high", interpreted("hr-high", "H")).Expect(t, http.StatusCreated)
			s.do(t, "", "PUT", "/Observation/hr-normal", interpreted("hr-normal", "N")).Expect(t, http.StatusCreated)
			s.do(t, "", "PUT", "/Observation/bp1", observation("bp1", painCode, "p1", 8)).Expect(t, http.StatusCreated)
			s.do(t, "", "PUT", "/Observation/bp2", observation("bp2", painCode, "p2", 8)).Expect(t, http.StatusCreated)
			s.do(t, "", "PUT", "/Observation/bp3", observation("bp3", pulseCode, "p1", 80)).Expect(t, http.StatusCreated)
			flagJSON := func(id, status string) string {
				return fmt.Sprintf(`{"resourceType":"Flag","id":%q,"status":%q,"code":{"text":"pain out of range"},"subject":{"reference":"Patient/p1"}}`, id, status)
			}
			s.do(t, "", "PUT", "/Flag/f1", flagJSON("f1", "active")).Expect(t, http.StatusCreated)
			s.do(t, "", "PUT", "/Flag/f2", flagJSON("f2", "inactive")).Expect(t, http.StatusCreated)
			s.do(t, "", "PUT", "/Observation/bp1", observation("bp1", painCode, "p1", 9)).Expect(t, http.StatusOK)

			base := s.Root + "/fhir"
			// Each stream starts with its handshake, then the events.
			events := func(ds []delivery) []delivery {
				t.Helper()
				if k, _ := notificationType(t, ds[0].Body); k != "handshake" {
					t.Errorf("first notification of %s is %s, not the handshake", ds[0].Path, k)
				}
				var out []delivery
				for _, d := range ds {
					if k, _ := notificationType(t, d.Body); k == "event-notification" {
						out = append(out, d)
					}
				}
				return out
			}
			gotPain := events(rcv.wait(t, "/pain", 3, 15*time.Second, 300*time.Millisecond))
			gotFlag := events(rcv.wait(t, "/flag", 2, 5*time.Second, 0))
			gotVital := events(rcv.wait(t, "/vital", 2, 5*time.Second, 0))
			if len(gotVital) != 1 {
				t.Fatalf("vital %v, want 1 (the H reading)", paths(gotVital))
			}
			var vb map[string]any
			json.Unmarshal(gotVital[0].Body, &vb)
			if entries := get(vb, "entry").([]any); len(entries) != 1 || param(param(get(entries[0], "resource"), "notification-event"), "focus") != nil {
				t.Errorf("empty payload carries a focus: %s", gotVital[0].Body)
			}
			checkSigned(t, gotVital[0], secretOf(t, vital), "Subscription/"+vital["id"].(string))
			if len(gotPain) != 2 || len(gotFlag) != 1 {
				t.Fatalf("pain %v, flag %v; want 2 and 1", paths(gotPain), paths(gotFlag))
			}
			check := func(d delivery, sub map[string]any, topic string, n int, content string) map[string]any {
				t.Helper()
				checkSigned(t, d, secretOf(t, sub), "Subscription/"+sub["id"].(string))
				if d.Method != "POST" || d.Header.Get("Content-Type") != "application/fhir+json" {
					t.Errorf("%s with %q", d.Method, d.Header.Get("Content-Type"))
				}
				var b map[string]any
				if err := json.Unmarshal(d.Body, &b); err != nil {
					t.Fatal(err)
				}
				if b["resourceType"] != "Bundle" || b["type"] != "history" {
					t.Fatalf("not a history Bundle: %s", d.Body)
				}
				st := get(b, "entry", 0, "resource")
				want := map[string]any{
					"subscription":                    map[string]any{"reference": base + "/Subscription/" + sub["id"].(string)},
					"topic":                           topic,
					"status":                          "active",
					"type":                            "event-notification",
					"events-since-subscription-start": fmt.Sprint(n),
				}
				if get(st, "resourceType") != "Parameters" || get(st, "meta", "profile", 0) != "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4" {
					t.Fatalf("first entry is not a SubscriptionStatus: %v", st)
				}
				for k, v := range want {
					if got, _ := json.Marshal(param(st, k)); string(got) != string(must(json.Marshal(v))) {
						t.Errorf("%s = %s, want %s", k, got, must(json.Marshal(v)))
					}
				}
				ev := param(st, "notification-event")
				if param(ev, "event-number") != fmt.Sprint(n) || param(ev, "timestamp") == nil {
					t.Errorf("notification-event %v", ev)
				}
				focus := get(b, "entry", 1)
				if fu := get(param(ev, "focus"), "reference"); fu != get(focus, "fullUrl") || fu == nil {
					t.Errorf("focus %v, entry fullUrl %v", fu, get(focus, "fullUrl"))
				}
				if (get(focus, "resource") != nil) != (content == "full-resource") {
					t.Errorf("%s payload, resource %v", content, get(focus, "resource"))
				}
				return focus.(map[string]any)
			}
			f := check(gotPain[0], pain, topics+"pain-score", 1, "id-only")
			if f["fullUrl"] != base+"/Observation/bp1" || get(f, "request", "method") != "POST" {
				t.Errorf("first pain focus %v", f)
			}
			f = check(gotPain[1], pain, topics+"pain-score", 2, "id-only")
			if f["fullUrl"] != base+"/Observation/bp1" || get(f, "request", "method") != "PUT" {
				t.Errorf("second pain focus %v", f)
			}
			f = check(gotFlag[0], flag, topics+"flag-raised", 1, "full-resource")
			if get(f, "resource", "id") != "f1" || get(f, "resource", "status") != "active" {
				t.Errorf("flag focus %v", f)
			}
		})
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
