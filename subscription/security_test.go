package subscription_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
)

const patientTag = "http://anodyne-fhir.org/fhir/CodeSystem/subscription-patient"

func tagsOf(res map[string]any) []string {
	var out []string
	tags, _ := get(res, "meta", "tag").([]any)
	for _, t := range tags {
		if get(t, "system") == patientTag {
			out = append(out, get(t, "code").(string))
		}
	}
	return out
}

func headersOf(res map[string]any) []string {
	var out []string
	hs, _ := get(res, "channel", "header").([]any)
	for _, h := range hs {
		out = append(out, h.(string))
	}
	return out
}

func withID(body, id string) string {
	return strings.Replace(body, `{"resourceType":"Subscription",`, `{"resourceType":"Subscription","id":"`+id+`",`, 1)
}

// TestPatientAppSubscriptionAndMasking: an app holding only patient/
// scopes subscribes for its patient (tagged by the server, hears only that
// patient, sees only its own Subscriptions); channel credentials are
// stored and sent to the receiver but every reader gets them masked (the
// secret is shown to the owner only), and a round trip of the masked
// values keeps the stored ones.
func TestPatientAppSubscriptionAndMasking(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			rcv := newReceiver(t)
			const appScopes = "patient/Observation.rs patient/Subscription.cruds"
			ps := map[string]*auth.Principal{
				"ehr":     {ClientID: "ehr", Subject: "ehr", Scopes: auth.ParseScopes("system/*.cruds")},
				"app":     {ClientID: "app", Subject: "u1", Scopes: auth.ParseScopes(appScopes), Patient: "p1"},
				"app2":    {ClientID: "app2", Subject: "u2", Scopes: auth.ParseScopes(appScopes), Patient: "p2"},
				"noscope": {ClientID: "noscope", Subject: "u3", Scopes: auth.ParseScopes("patient/Observation.rs"), Patient: "p1"},
				"reader":  {ClientID: "reader", Subject: "admin", Scopes: auth.ParseScopes("system/Subscription.rs")},
			}
			s := start(t, be.Open(t), ps, nil)
			body := subscriptionJSON("Observation?code="+painCode, rcv.ts.URL+"/app", "application/fhir+json")
			// A forged tag for another patient is the client's word: replaced.
			forged := strings.Replace(body, `"status":"requested",`, `"status":"requested","meta":{"tag":[{"system":"`+patientTag+`","code":"p2"}]},`, 1)
			sub := s.do(t, "app", "POST", "/Subscription", forged).Expect(t, http.StatusCreated).JSON(t)
			id := sub["id"].(string)
			if tags := tagsOf(sub); len(tags) != 1 || tags[0] != "p1" {
				t.Errorf("patient tags %v, want [p1]", tags)
			}
			if h := headersOf(sub); len(h) != 1 || h[0] != "Authorization: [masked]" {
				t.Errorf("headers in the create answer %v", h)
			}
			secret := secretOf(t, sub)
			if secret == "[masked]" {
				t.Fatal("the owner does not see its secret")
			}
			s.do(t, "noscope", "POST", "/Subscription", body).Expect(t, http.StatusForbidden)
			s.do(t, "app", "POST", "/Subscription", subscriptionJSON("Flag?patient=Patient/p1", rcv.ts.URL+"/flag", "")).Expect(t, http.StatusForbidden)
			ehrSub := s.do(t, "ehr", "POST", "/Subscription", strings.Replace(strings.Replace(forged, `"code":"p2"`, `"code":"p1"`, 1), "/app", "/ehr", 1)).Expect(t, http.StatusCreated).JSON(t)
			if tags := tagsOf(ehrSub); len(tags) != 0 {
				t.Errorf("an EHR's Subscription carries patient tags %v", tags)
			}

			// Who sees what.
			if b := s.do(t, "app", "GET", "/Subscription", "").Expect(t, http.StatusOK).JSON(t); len(get(b, "entry").([]any)) != 1 || get(b, "entry", 0, "resource", "id") != id {
				t.Errorf("the app's search: %v", b)
			}
			s.do(t, "app", "GET", "/Subscription/"+ehrSub["id"].(string), "").Expect(t, http.StatusForbidden)
			s.do(t, "app2", "GET", "/Subscription/"+id, "").Expect(t, http.StatusForbidden)
			s.do(t, "app2", "PUT", "/Subscription/"+id, withID(body, id)).Expect(t, http.StatusForbidden)
			s.do(t, "app2", "DELETE", "/Subscription/"+id, "").Expect(t, http.StatusForbidden)
			s.do(t, "app", "PUT", "/Subscription/"+ehrSub["id"].(string), withID(body, ehrSub["id"].(string))).Expect(t, http.StatusForbidden)
			if b := s.do(t, "app2", "GET", "/Subscription", "").Expect(t, http.StatusOK).JSON(t); get(b, "entry") != nil {
				t.Errorf("another patient's app sees %v", get(b, "entry"))
			}
			seen := s.do(t, "reader", "GET", "/Subscription/"+id, "").Expect(t, http.StatusOK).JSON(t)
			if h := headersOf(seen); len(h) != 1 || h[0] != "Authorization: [masked]" || secretOf(t, seen) != "[masked]" {
				t.Errorf("a reader sees headers %v, secret %q", h, secretOf(t, seen))
			}
			hist := s.do(t, "reader", "GET", "/Subscription/"+id+"/_history", "").Expect(t, http.StatusOK)
			if strings.Contains(string(hist.Body), "receiver-token") || strings.Contains(string(hist.Body), secret) {
				t.Error("history shows the stored credentials")
			}
			search := s.do(t, "reader", "GET", "/Subscription?_id="+id, "").Expect(t, http.StatusOK)
			if strings.Contains(string(search.Body), "receiver-token") || strings.Contains(string(search.Body), secret) {
				t.Error("search shows the stored credentials")
			}

			// The owner writes back what it read: the stored values stay.
			mine := s.do(t, "app", "GET", "/Subscription/"+id, "").Expect(t, http.StatusOK).JSON(t)
			mine["reason"] = "pain scores, renamed"
			rt, _ := json.Marshal(mine)
			s.do(t, "app", "PUT", "/Subscription/"+id, string(rt)).Expect(t, http.StatusOK)
			bad := strings.Replace(withID(body, id), `"header":["Authorization: Bearer receiver-token"]`, `"header":["X-Other: [masked]"]`, 1)
			s.do(t, "app", "PUT", "/Subscription/"+id, bad).Expect(t, http.StatusUnprocessableEntity)

			for _, w := range []struct{ id, patient string }{{"a1", "p1"}, {"b1", "p2"}, {"a2", "p1"}} {
				s.do(t, "ehr", "PUT", "/Observation/"+w.id, observation(w.id, painCode, w.patient, 8)).Expect(t, http.StatusCreated)
			}
			got := rcv.wait(t, "/app", 2, 10*time.Second, 500*time.Millisecond)
			if p := paths(got); len(p) != 2 || p[0] != "PUT /app/Observation/a1" || p[1] != "PUT /app/Observation/a2" {
				t.Errorf("the patient app heard %v, want its patient's a1 and a2", p)
			}
			for _, d := range got {
				checkSigned(t, d, secret, "Subscription/"+id)
			}
		})
	}
}
