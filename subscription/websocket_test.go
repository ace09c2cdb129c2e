package subscription_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/anodyne-fhir/anodyne/auth"
)

func wsSubscription(content string) string {
	return withHeartbeat(fmt.Sprintf(`{"resourceType":"Subscription","status":"requested","reason":"pain on a socket",
		"criteria":"http://anodyne-fhir.org/fhir/SubscriptionTopic/pain-score",
		"_criteria":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria","valueString":"Observation?patient=Patient/p1"}]},
		"channel":{"type":"websocket","payload":"application/fhir+json",
		"_payload":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content","valueCode":%q}]}}}`, content), 1)
}

// readNotice reads the next text message as a notification Bundle.
func readNotice(t *testing.T, c *websocket.Conn) (string, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("reading the websocket: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("message type %v", typ)
	}
	return notificationType(t, msg)
}

// TestWebsocketChannel: a real websocket client binds with a token from
// $get-ws-binding-token (owner only), gets the handshake, the event that
// waited in the outbox while nobody was bound, a new event as it is
// written, and heartbeats; a wrong token is refused with a policy
// violation; websocket Subscriptions have no endpoint (R4 criteria ones are
// TestR4WebsocketChannel's).
func TestWebsocketChannel(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			ps := map[string]*auth.Principal{
				"ehr":   {ClientID: "ehr", Subject: "ehr", Scopes: auth.ParseScopes("system/*.cruds")},
				"other": {ClientID: "other", Subject: "other", Scopes: auth.ParseScopes("system/Subscription.rs")},
			}
			s := start(t, be.Open(t), ps, nil)
			sub := s.do(t, "ehr", "POST", "/Subscription", wsSubscription("full-resource")).Expect(t, http.StatusCreated).JSON(t)
			id := sub["id"].(string)
			if sub["status"] != "active" {
				t.Errorf("websocket Subscription status %v, want active", sub["status"])
			}
			s.do(t, "ehr", "POST", "/Subscription", strings.Replace(wsSubscription("id-only"), `"type":"websocket",`, `"type":"websocket","endpoint":"https://example.org/hook",`, 1)).Expect(t, http.StatusUnprocessableEntity)

			// Written before anyone is bound: it waits in the outbox.
			s.do(t, "ehr", "PUT", "/Observation/early", observation("early", painCode, "p1", 6)).Expect(t, http.StatusCreated)
			s.do(t, "ehr", "PUT", "/Observation/elsewhere", observation("elsewhere", painCode, "p2", 6)).Expect(t, http.StatusCreated)

			s.do(t, "other", "GET", "/Subscription/"+id+"/$get-ws-binding-token", "").Expect(t, http.StatusForbidden)
			tok := s.do(t, "ehr", "POST", "/Subscription/"+id+"/$get-ws-binding-token", "").Expect(t, http.StatusOK).JSON(t)
			token, _ := param(tok, "token").(string)
			wsURL, _ := param(tok, "websocket-url").(string)
			if token == "" || param(tok, "subscription") != id || wsURL != "ws"+strings.TrimPrefix(s.Root, "http")+"/fhir/ws" || param(tok, "expiration") == nil {
				t.Fatalf("binding token answer %v", tok)
			}

			ctx := context.Background()
			bad, _, err := websocket.Dial(ctx, wsURL, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := bad.Write(ctx, websocket.MessageText, []byte("bind-with-token not-a-token")); err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, _, err = bad.Read(rctx)
			cancel()
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation {
				t.Errorf("wrong token: %v, want a policy-violation close", err)
			}

			c, _, err := websocket.Dial(ctx, wsURL, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if err := c.Write(ctx, websocket.MessageText, []byte("bind-with-token "+token)); err != nil {
				t.Fatal(err)
			}
			if k, b := readNotice(t, c); k != "handshake" || param(get(b, "entry", 0, "resource"), "subscription") == nil {
				t.Fatalf("first message %s %v, want the handshake", k, b)
			}
			next := func(want string) map[string]any {
				t.Helper()
				for {
					k, b := readNotice(t, c)
					if k == want {
						return b
					}
					if k != "heartbeat" {
						t.Fatalf("got %s while waiting for %s: %v", k, want, b)
					}
				}
			}
			ev := next("event-notification")
			if get(ev, "entry", 1, "resource", "id") != "early" || param(get(ev, "entry", 0, "resource"), "events-since-subscription-start") != "1" {
				t.Errorf("queued event %v", ev)
			}
			s.do(t, "ehr", "PUT", "/Observation/late", observation("late", painCode, "p1", 9)).Expect(t, http.StatusCreated)
			ev = next("event-notification")
			if get(ev, "entry", 1, "resource", "id") != "late" || param(get(ev, "entry", 0, "resource"), "events-since-subscription-start") != "2" {
				t.Errorf("live event %v", ev)
			}
			hb := next("heartbeat")
			if param(get(hb, "entry", 0, "resource"), "events-since-subscription-start") != "2" {
				t.Errorf("heartbeat %v", hb)
			}
			replay := s.do(t, "ehr", "GET", "/Subscription/"+id+"/$events", "").Expect(t, http.StatusOK).JSON(t)
			if n := len(get(replay, "entry").([]any)); n != 3 {
				t.Errorf("$events after two socket events: %d entries, want 3", n)
			}
			s.do(t, "other", "GET", "/Subscription/"+id+"/$events", "").Expect(t, http.StatusForbidden)
		})
	}
}
