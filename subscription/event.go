package subscription

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// eventV1 is the stored form of one notification (storage.Event.Data).
// Its encoding is pinned by TestEventEncoding: events written by one
// release must be delivered by the next.
type eventV1 struct {
	V int `json:"v"` // always 1
	// Kind is empty for a resource's event, or kindHandshake for the
	// backport's handshake of a new topic-based Subscription (no resource).
	Kind    string `json:"kind,omitempty"`
	Type    string `json:"type,omitempty"`
	ID      string `json:"id,omitempty"`
	Version int64  `json:"version,omitempty"`
}

const kindHandshake = "handshake"

func encodeEvent(typ, id string, version int64) []byte {
	b, _ := json.Marshal(eventV1{V: 1, Type: typ, ID: id, Version: version}) // cannot fail: strings and ints
	return b
}

func encodeHandshake() []byte {
	b, _ := json.Marshal(eventV1{V: 1, Kind: kindHandshake})
	return b
}

func decodeEvent(data []byte) (eventV1, error) {
	var ev eventV1
	if err := json.Unmarshal(data, &ev); err != nil {
		return ev, fmt.Errorf("decoding subscription event: %w", err)
	}
	if ev.V == 1 && ev.Kind == kindHandshake && ev.Type == "" && ev.ID == "" && ev.Version == 0 {
		return ev, nil
	}
	if ev.V != 1 || ev.Kind != "" || ev.Type == "" || ev.ID == "" || ev.Version < 1 {
		return ev, fmt.Errorf("subscription event of unknown form %q", data)
	}
	return ev, nil
}

func streamOf(subID string) string { return "Subscription/" + subID }

func subIDOf(stream string) (string, bool) {
	return strings.CutPrefix(stream, "Subscription/")
}

func newEventID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// Header names of a delivery (documented in the package doc and README).
const (
	HeaderEventID      = "X-Anodyne-Event-Id"
	HeaderSubscription = "X-Anodyne-Subscription"
	HeaderSignature    = "X-Anodyne-Signature"
)

// Sign is the X-Anodyne-Signature value of a delivery: "sha256=" and the
// hex HMAC-SHA256, keyed by the Subscription's secret, of the event id, a
// dot and the body. Binding the id makes an empty-payload notification
// unforgeable too, and a receiver that de-duplicates by id cannot be fed
// a replayed body under a fresh id.
func Sign(secret, eventID string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(eventID))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a signature in constant time (for receivers and tests).
func Verify(secret, eventID string, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(secret, eventID, body)), []byte(signature))
}
