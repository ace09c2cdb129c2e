package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestSubscriptionWebsocketServed: the served configuration (real
// tokens, the transport handler, the CapabilityStatement) carries the
// backport's websocket channel: a binding token from
// $get-ws-binding-token, bind-with-token on the announced URL, the
// handshake and a notification of a write.
func TestSubscriptionWebsocketServed(t *testing.T) {
	dir := t.TempDir()
	key, jwks := es384(t)
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, "clients", "add", "--data-dir", dir, "--id", "ehr", "--type", "confidential-asymmetric", "--jwks-file", jwksFile, "--scope", "system/*.cruds")
	srv := startServe(t, "--data-dir", dir, "--audit=off")
	ehr := backendToken(t, srv.base, "ehr", key, "system/*.cruds")
	res, cs := call(t, http.MethodGet, srv.base+"/fhir/metadata", "", nil, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("metadata: %d", res.StatusCode)
	}
	rest := cs["rest"].([]any)[0].(map[string]any)
	var announced string
	for _, e := range rest["extension"].([]any) {
		if em := e.(map[string]any); em["url"] == "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket" {
			announced, _ = em["valueUri"].(string)
		}
	}
	res, sub := call(t, http.MethodPost, srv.base+"/fhir/Subscription", ehr, nil, map[string]any{
		"resourceType": "Subscription", "status": "requested", "reason": "pain", "criteria": "http://anodyne-fhir.org/fhir/SubscriptionTopic/pain-score",
		"channel": map[string]any{"type": "websocket", "payload": "application/fhir+json",
			"_payload": map[string]any{"extension": []any{map[string]any{"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content", "valueCode": "id-only"}}}},
	})
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("POST Subscription: %d %v", res.StatusCode, sub)
	}
	id := sub["id"].(string)
	res, tok := call(t, http.MethodGet, srv.base+"/fhir/Subscription/"+id+"/$get-ws-binding-token", ehr, nil, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("$get-ws-binding-token: %d %v", res.StatusCode, tok)
	}
	values := map[string]string{}
	for _, p := range tok["parameter"].([]any) {
		pm := p.(map[string]any)
		for k, v := range pm {
			if s, ok := v.(string); ok && k != "name" {
				values[pm["name"].(string)] = s
			}
		}
	}
	if values["websocket-url"] != announced || announced == "" {
		t.Fatalf("websocket-url %q, CapabilityStatement %q", values["websocket-url"], announced)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, announced, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", announced, err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("bind-with-token "+values["token"])); err != nil {
		t.Fatal(err)
	}
	kind := func() (string, map[string]any) {
		_, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var b map[string]any
		if err := json.Unmarshal(msg, &b); err != nil {
			t.Fatal(err)
		}
		st := b["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)
		for _, p := range st["parameter"].([]any) {
			if pm := p.(map[string]any); pm["name"] == "type" {
				return pm["valueCode"].(string), b
			}
		}
		return "", b
	}
	if k, b := kind(); k != "handshake" {
		t.Fatalf("first message %s: %v", k, b)
	}
	obs := map[string]any{"resourceType": "Observation", "id": "ws-1", "status": "final",
		"code":    map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "72514-3"}}},
		"subject": map[string]any{"reference": "Patient/p1"}, "valueQuantity": map[string]any{"value": 8}}
	if res, b := call(t, http.MethodPut, srv.base+"/fhir/Observation/ws-1", ehr, nil, obs); res.StatusCode != http.StatusCreated {
		t.Fatalf("PUT Observation: %d %v", res.StatusCode, b)
	}
	k, b := kind()
	if k != "event-notification" || b["entry"].([]any)[1].(map[string]any)["fullUrl"] != srv.base+"/fhir/Observation/ws-1" {
		t.Fatalf("notification %s: %v", k, b)
	}
}
