package subscription_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/fhir/fhirtest"
	"github.com/anodyne-fhir/anodyne/subscription"
)

// TestR4WebsocketChannel: the R4 websocket protocol for a criteria
// Subscription. The socket is opened with a real signed bearer token; the
// owner's "bind ID" is answered "bound ID", each matching write (and only
// those) "ping ID"; no token, or another client's token, gets a
// policy-violation close.
func TestR4WebsocketChannel(t *testing.T) {
	is := fhirtest.NewIssuer(t, "https://issuer.test")
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			ps := map[string]*auth.Principal{
				"ehr": {ClientID: "ehr", Subject: "ehr", Scopes: auth.ParseScopes("system/*.cruds")},
			}
			var aud string
			s := start(t, be.Open(t), ps, func(c *subscription.Config) {
				c.Authenticate = func(ctx context.Context, raw string) (context.Context, error) {
					p, err := is.Verifier(t, aud).Verify(ctx, raw)
					if err != nil {
						return nil, err
					}
					return auth.WithPrincipal(ctx, p), nil
				}
			})
			aud = s.Base
			sub := s.do(t, "ehr", "POST", "/Subscription", `{"resourceType":"Subscription","status":"requested","reason":"pain on an R4 socket",
				"criteria":"Observation?code=http://loinc.org|`+painCode+`","channel":{"type":"websocket"}}`).Expect(t, http.StatusCreated).JSON(t)
			id := sub["id"].(string)
			if sub["status"] != "active" {
				t.Errorf("status %v, want active", sub["status"])
			}
			wsURL := "ws" + s.Root[len("http"):] + subscription.WebsocketPath
			ctx := context.Background()
			dial := func(token string) *websocket.Conn {
				t.Helper()
				var opts *websocket.DialOptions
				if token != "" {
					opts = &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}}
				}
				c, _, err := websocket.Dial(ctx, wsURL, opts)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Write(ctx, websocket.MessageText, []byte("bind "+id)); err != nil {
					t.Fatal(err)
				}
				return c
			}
			read := func(c *websocket.Conn, wait time.Duration) (string, error) {
				rctx, cancel := context.WithTimeout(ctx, wait)
				defer cancel()
				_, msg, err := c.Read(rctx)
				return string(msg), err
			}
			for name, token := range map[string]string{
				"no token":         "",
				"another client":   is.Token(t, s.Base, "system/*.cruds", map[string]any{"client_id": "other"}),
				"another audience": is.Token(t, "https://elsewhere.test/fhir", "system/*.cruds", map[string]any{"client_id": "ehr"}),
			} {
				c := dial(token)
				_, err := read(c, 5*time.Second)
				var ce websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation {
					t.Errorf("%s: %v, want a policy-violation close", name, err)
				}
				c.CloseNow()
			}

			c := dial(is.Token(t, s.Base, "system/*.cruds", map[string]any{"client_id": "ehr"}))
			defer c.CloseNow()
			if msg, err := read(c, 10*time.Second); err != nil || msg != "bound "+id {
				t.Fatalf("answer to bind: %q, %v; want %q", msg, err, "bound "+id)
			}
			s.do(t, "ehr", "PUT", "/Observation/other-code", observation("other-code", "8867-4", "p1", 60)).Expect(t, http.StatusCreated)
			s.do(t, "ehr", "PUT", "/Observation/pain", observation("pain", painCode, "p1", 8)).Expect(t, http.StatusCreated)
			if msg, err := read(c, 10*time.Second); err != nil || msg != "ping "+id {
				t.Fatalf("after a matching write: %q, %v; want %q", msg, err, "ping "+id)
			}
			if msg, err := read(c, 2*time.Second); err == nil {
				t.Fatalf("a second message %q for one matching write (the other code must not ping)", msg)
			}
		})
	}
}

// TestWebsocketAcrossProcesses: two servers share one store (one SQLite
// file; one FerretDB database). A socket bound on the first hears of
// matching writes committed by the second, once each, and of no other.
func TestWebsocketAcrossProcesses(t *testing.T) {
	for _, st := range env.SharedStores() {
		t.Run(st.Name, func(t *testing.T) {
			bs := st.Open(t)
			a := start(t, bs[0], nil, nil)
			b := start(t, bs[1], nil, nil)
			sub := a.do(t, "", "POST", "/Subscription", `{"resourceType":"Subscription","status":"requested","reason":"pain across processes",
				"criteria":"Observation?code=http://loinc.org|`+painCode+`","channel":{"type":"websocket"}}`).Expect(t, http.StatusCreated).JSON(t)
			id := sub["id"].(string)
			ctx := context.Background()
			c, _, err := websocket.Dial(ctx, "ws"+a.Root[len("http"):]+subscription.WebsocketPath, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if err := c.Write(ctx, websocket.MessageText, []byte("bind "+id)); err != nil {
				t.Fatal(err)
			}
			// One reader: a Read whose context ends closes the socket.
			msgs := make(chan string, 100)
			go func() {
				defer close(msgs)
				for {
					_, msg, err := c.Read(ctx)
					if err != nil {
						return
					}
					msgs <- string(msg)
				}
			}()
			errQuiet := errors.New("no message")
			read := func(wait time.Duration) (string, error) {
				select {
				case m, ok := <-msgs:
					if !ok {
						return "", errors.New("socket closed")
					}
					return m, nil
				case <-time.After(wait):
					return "", errQuiet
				}
			}
			if msg, err := read(10 * time.Second); err != nil || msg != "bound "+id {
				t.Fatalf("answer to bind: %q, %v", msg, err)
			}
			// The second server hears of the Subscription within its Check.
			deadline := time.Now().Add(10 * time.Second)
			for n := 0; ; n++ {
				if time.Now().After(deadline) {
					t.Fatal("the second server never matched the first's Subscription")
				}
				oid := fmt.Sprintf("probe-%d", n)
				b.do(t, "", "PUT", "/Observation/"+oid, observation(oid, painCode, "p1", 8)).Expect(t, http.StatusCreated)
				if msg, err := read(time.Second); err != errQuiet {
					if msg != "ping "+id {
						t.Fatalf("message %q, want %q", msg, "ping "+id)
					}
					break
				}
			}
			// Earlier probes' pings may still arrive, late under load: drain
			// until 3 s pass without one, so that none of them is taken
			// for a second ping of the write below.
			msg, err := read(3 * time.Second)
			for ; err == nil; msg, err = read(3 * time.Second) {
				if msg != "ping "+id {
					t.Fatalf("message %q, want %q", msg, "ping "+id)
				}
			}
			b.do(t, "", "PUT", "/Observation/other", observation("other", pulseCode, "p1", 60)).Expect(t, http.StatusCreated)
			b.do(t, "", "PUT", "/Observation/pain", observation("pain", painCode, "p1", 9)).Expect(t, http.StatusCreated)
			if msg, err := read(10 * time.Second); err != nil || msg != "ping "+id {
				t.Fatalf("after the second server's matching write: %q, %v; want %q", msg, err, "ping "+id)
			}
			if msg, err := read(2 * time.Second); err != errQuiet {
				t.Fatalf("a second message %q (%v) for one matching write", msg, err)
			}
		})
	}
}
