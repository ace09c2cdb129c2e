package subscription_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/subscription"
)

const (
	painCode  = "72514-3"
	pulseCode = "8867-4"
)

func observation(id, code, patient string, value int) string {
	idPart := ""
	if id != "" {
		idPart = fmt.Sprintf(`"id":%q,`, id)
	}
	return fmt.Sprintf(`{"resourceType":"Observation",%s"status":"final","code":{"coding":[{"system":"http://loinc.org","code":%q}]},"subject":{"reference":"Patient/%s"},"effectiveDateTime":"2026-12-01T10:00:00Z","valueQuantity":{"value":%d,"unit":"score","system":"http://unitsofmeasure.org","code":"{score}"}}`, idPart, code, patient, value)
}

func subscriptionJSON(criteria, endpoint, payload string) string {
	pl := ""
	if payload != "" {
		pl = fmt.Sprintf(`,"payload":%q`, payload)
	}
	return fmt.Sprintf(`{"resourceType":"Subscription","status":"requested","reason":"pain scores","criteria":%q,"channel":{"type":"rest-hook","endpoint":%q%s,"header":["Authorization: Bearer receiver-token"]}}`, criteria, endpoint, pl)
}

// secretOf reads the HMAC secret from a stored Subscription.
func secretOf(t testing.TB, sub map[string]any) string {
	t.Helper()
	exts, _ := get(sub, "channel", "extension").([]any)
	for _, e := range exts {
		if get(e, "url") == "http://anodyne-fhir.org/fhir/StructureDefinition/subscription-secret" {
			s, _ := get(e, "valueString").(string)
			return s
		}
	}
	t.Fatalf("no secret on %v", sub)
	return ""
}

// written is what the test wrote, to compute the expected notifications.
type written struct {
	id, code, patient string
}

// TestRestHookEveryWritePath subscribes two clients to pain scores (a
// system client with full payloads, a patient/ app with empty ones), writes
// matching and non-matching Observations through create, update,
// transaction, batch and $import, and checks that each receiver gets
// exactly the notifications for the pain scores its owner may read,
// signed with its Subscription's secret.
func TestRestHookEveryWritePath(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			rcv := newReceiver(t)
			ps := map[string]*auth.Principal{
				"ehr": {ClientID: "ehr", Subject: "ehr", Scopes: auth.ParseScopes("system/*.cruds")},
				// A clinician's app launched for patient p1: its Observations are
				// p1's, its Subscriptions its user's (patient/ scopes cannot
				// open Subscription, which is in no patient's compartment).
				"app": {ClientID: "app", Subject: "dr1", FHIRUser: "Practitioner/dr1", Scopes: auth.ParseScopes("patient/Observation.rs user/Subscription.cruds"), Patient: "p1"},
			}
			s := start(t, be.Open(t), ps, nil)
			for _, p := range []string{"p1", "p2"} {
				s.do(t, "ehr", "PUT", "/Patient/"+p, fmt.Sprintf(`{"resourceType":"Patient","id":%q}`, p)).Expect(t, http.StatusCreated)
			}
			criteria := "Observation?code=http://loinc.org|" + painCode
			ehrSub := s.do(t, "ehr", "POST", "/Subscription", subscriptionJSON(criteria, rcv.ts.URL+"/ehr", "application/fhir+json")).Expect(t, http.StatusCreated).JSON(t)
			if ehrSub["status"] != "active" {
				t.Fatalf("created Subscription status %v, want active", ehrSub["status"])
			}
			appSub := s.do(t, "app", "POST", "/Subscription", subscriptionJSON(criteria, rcv.ts.URL+"/app", "")).Expect(t, http.StatusCreated).JSON(t)
			ehrSecret, appSecret := secretOf(t, ehrSub), secretOf(t, appSub)
			if ehrSecret == appSecret || len(ehrSecret) < 16 {
				t.Fatalf("secrets %q and %q", ehrSecret, appSecret)
			}

			var all []written
			// create
			for _, w := range []written{{"", painCode, "p1"}, {"", pulseCode, "p1"}, {"", painCode, "p2"}} {
				r := s.do(t, "ehr", "POST", "/Observation", observation("", w.code, w.patient, 7)).Expect(t, http.StatusCreated).JSON(t)
				w.id = r["id"].(string)
				all = append(all, w)
			}
			// update (a new version of a pain score notifies again)
			s.do(t, "ehr", "PUT", "/Observation/up1", observation("up1", pulseCode, "p1", 60)).Expect(t, http.StatusCreated)
			all = append(all, written{"up1", pulseCode, "p1"})
			s.do(t, "ehr", "PUT", "/Observation/up1", observation("up1", painCode, "p1", 5)).Expect(t, http.StatusOK)
			all = append(all, written{"up1", painCode, "p1"})
			// transaction and batch
			for _, typ := range []string{"transaction", "batch"} {
				bundle := fmt.Sprintf(`{"resourceType":"Bundle","type":%q,"entry":[
					{"resource":%s,"request":{"method":"PUT","url":"Observation/%s-pain2"}},
					{"resource":%s,"request":{"method":"PUT","url":"Observation/%s-pulse2"}},
					{"resource":%s,"request":{"method":"PUT","url":"Observation/%s-pain1"}}]}`, typ,
					observation(typ+"-pain2", painCode, "p2", 9), typ, observation(typ+"-pulse2", pulseCode, "p2", 80), typ, observation(typ+"-pain1", painCode, "p1", 3), typ)
				s.do(t, "ehr", "POST", "", bundle).Expect(t, http.StatusOK)
				all = append(all, written{typ + "-pain2", painCode, "p2"}, written{typ + "-pulse2", pulseCode, "p2"}, written{typ + "-pain1", painCode, "p1"})
			}
			// $import (NDJSON)
			nd := observation("imp-pain1", painCode, "p1", 8) + "\n" + observation("imp-pulse1", pulseCode, "p1", 70) + "\n" + observation("imp-pain2", painCode, "p2", 2) + "\n"
			s.do(t, "ehr", "POST", "/$import", nd, "Content-Type: application/fhir+ndjson").Expect(t, http.StatusOK)
			all = append(all, written{"imp-pain1", painCode, "p1"}, written{"imp-pulse1", pulseCode, "p1"}, written{"imp-pain2", painCode, "p2"})
			// a delete notifies nothing
			s.do(t, "ehr", "DELETE", "/Observation/imp-pulse1", "").Expect(t, http.StatusNoContent)

			var wantEHR, wantApp []string
			for _, w := range all {
				if w.code != painCode {
					continue
				}
				wantEHR = append(wantEHR, "PUT /ehr/Observation/"+w.id)
				if w.patient == "p1" {
					wantApp = append(wantApp, "POST /app")
				}
			}
			gotEHR := rcv.wait(t, "/ehr", len(wantEHR), 20*time.Second, 300*time.Millisecond)
			gotApp := rcv.wait(t, "/app", len(wantApp), 5*time.Second, 0)
			// Order per Subscription follows commit order; compare as lists.
			if !slices.Equal(paths(gotEHR), wantEHR) {
				t.Errorf("ehr receiver got\n%v\nwant\n%v", paths(gotEHR), wantEHR)
			}
			if !slices.Equal(paths(gotApp), wantApp) {
				t.Errorf("app receiver got\n%v\nwant\n%v", paths(gotApp), wantApp)
			}
			ids := map[string]bool{}
			for _, d := range gotEHR {
				checkSigned(t, d, ehrSecret, "Subscription/"+ehrSub["id"].(string))
				ids[d.Header.Get(subscription.HeaderEventID)] = true
				var res map[string]any
				if err := json.Unmarshal(d.Body, &res); err != nil || res["resourceType"] != "Observation" || !strings.HasSuffix(d.Path, "/"+res["id"].(string)) {
					t.Errorf("ehr payload %s at %s", d.Body, d.Path)
				}
				if d.Header.Get("Content-Type") != "application/fhir+json" {
					t.Errorf("content type %q", d.Header.Get("Content-Type"))
				}
			}
			for _, d := range gotApp {
				checkSigned(t, d, appSecret, "Subscription/"+appSub["id"].(string))
				ids[d.Header.Get(subscription.HeaderEventID)] = true
				if len(d.Body) != 0 {
					t.Errorf("empty-payload notification carried %q", d.Body)
				}
			}
			if len(ids) != len(gotEHR)+len(gotApp) {
				t.Errorf("%d distinct event ids over %d deliveries", len(ids), len(gotEHR)+len(gotApp))
			}
		})
	}
}

func checkSigned(t testing.TB, d delivery, secret, sub string) {
	t.Helper()
	id := d.Header.Get(subscription.HeaderEventID)
	if id == "" || !subscription.Verify(secret, id, d.Body, d.Header.Get(subscription.HeaderSignature)) {
		t.Errorf("%s %s: signature %q does not verify for event %q", d.Method, d.Path, d.Header.Get(subscription.HeaderSignature), id)
	}
	if got := d.Header.Get(subscription.HeaderSubscription); got != sub {
		t.Errorf("%s header %q, want %q", subscription.HeaderSubscription, got, sub)
	}
	if got := d.Header.Get("Authorization"); got != "Bearer receiver-token" {
		t.Errorf("channel.header not sent: Authorization %q", got)
	}
}

// TestSubscriptionWriteRules checks what a Subscription write may say.
func TestSubscriptionWriteRules(t *testing.T) {
	be := backends()[0]
	ps := map[string]*auth.Principal{
		"ehr":   {ClientID: "ehr", Subject: "ehr", Scopes: auth.ParseScopes("system/*.cruds")},
		"other": {ClientID: "other", Subject: "other", Scopes: auth.ParseScopes("system/*.cruds")},
		"subs":  {ClientID: "subs", Subject: "subs", Scopes: auth.ParseScopes("system/Subscription.cruds")},
	}
	s := start(t, be.Open(t), ps, func(c *subscription.Config) { c.MaxPerClient = 2 })
	const ep = "http://127.0.0.1:9/hook"
	cases := []struct {
		name, as, body string
		status         int
		diag           string
	}{
		{"unknown parameter", "ehr", subscriptionJSON("Observation?nonsense=1", ep, ""), 422, "nonsense"},
		{"chain", "ehr", subscriptionJSON("Observation?subject.name=x", ep, ""), 422, "subject.name"},
		{"bad value", "ehr", subscriptionJSON("Observation?value-quantity=high", ep, ""), 422, "value-quantity"},
		{"private endpoint", "ehr", subscriptionJSON("Observation?code=1", "https://10.0.0.8/hook", ""), 422, "private"},
		{"metadata endpoint", "ehr", subscriptionJSON("Observation?code=1", "https://169.254.169.254/", ""), 422, "169.254.169.254"},
		{"plain http elsewhere", "ehr", subscriptionJSON("Observation?code=1", "http://ehr.example.org/hook", ""), 422, "loopback"},
		{"xml payload", "ehr", subscriptionJSON("Observation?code=1", ep, "application/fhir+xml"), 422, "payload"},
		{"websocket", "ehr", strings.Replace(subscriptionJSON("Observation?code=1", ep, ""), "rest-hook", "websocket", 1), 422, "websocket"},
		{"reserved header", "ehr", strings.Replace(subscriptionJSON("Observation?code=1", ep, ""), "Authorization: Bearer receiver-token", "X-Anodyne-Signature: forged", 1), 422, "X-Anodyne-Signature"},
		{"client sets error", "ehr", strings.Replace(subscriptionJSON("Observation?code=1", ep, ""), `"requested"`, `"error"`, 1), 422, "status"},
		{"type the client cannot search", "subs", subscriptionJSON("Observation?code=1", ep, ""), 403, "Observation"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do(t, tc.as, "POST", "/Subscription", tc.body).Expect(t, tc.status)
			if !strings.Contains(string(r.Body), tc.diag) {
				t.Errorf("outcome does not mention %q: %s", tc.diag, r.Body)
			}
		})
	}
	// A forged owner is replaced; another client cannot take it over.
	forged := strings.Replace(subscriptionJSON("Observation?code=1", ep, ""), `"reason"`, `"extension":[{"url":"http://anodyne-fhir.org/fhir/StructureDefinition/subscription-owner","extension":[{"url":"client","valueString":"other"}]}],"reason"`, 1)
	sub := s.do(t, "ehr", "POST", "/Subscription", forged).Expect(t, http.StatusCreated).JSON(t)
	if owner := get(sub, "extension", 0, "extension", 0, "valueString"); owner != "ehr" {
		t.Errorf("owner %v, want ehr", owner)
	}
	id := sub["id"].(string)
	s.do(t, "other", "PUT", "/Subscription/"+id, strings.Replace(subscriptionJSON("Observation?code=2", ep, ""), `{"resourceType":"Subscription",`, `{"resourceType":"Subscription","id":"`+id+`",`, 1)).Expect(t, http.StatusForbidden)
	// The owner's round trip keeps the secret.
	upd := s.do(t, "ehr", "PUT", "/Subscription/"+id, strings.Replace(subscriptionJSON("Observation?code=2", ep, ""), `{"resourceType":"Subscription",`, `{"resourceType":"Subscription","id":"`+id+`",`, 1)).Expect(t, http.StatusOK).JSON(t)
	if secretOf(t, upd) != secretOf(t, sub) {
		t.Error("an update without the secret extension changed the secret")
	}
	// The per-client cap (2): a second is accepted, a third refused, an off one free.
	s.do(t, "ehr", "POST", "/Subscription", subscriptionJSON("Observation?code=3", ep, "")).Expect(t, http.StatusCreated)
	s.do(t, "ehr", "POST", "/Subscription", subscriptionJSON("Observation?code=4", ep, "")).Expect(t, http.StatusUnprocessableEntity)
	off := s.do(t, "ehr", "POST", "/Subscription", strings.Replace(subscriptionJSON("Observation?code=4", ep, ""), `"requested"`, `"off"`, 1)).Expect(t, http.StatusCreated).JSON(t)
	if off["status"] != "off" {
		t.Errorf("status %v, want off", off["status"])
	}
	// An end in the past is off at once.
	past := s.do(t, "other", "POST", "/Subscription", strings.Replace(subscriptionJSON("Observation?code=4", ep, ""), `"reason"`, `"end":"2020-01-01T00:00:00Z","reason"`, 1)).Expect(t, http.StatusCreated).JSON(t)
	if past["status"] != "off" {
		t.Errorf("status %v with a past end, want off", past["status"])
	}
}
