package subscription

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestEventEncoding pins the stored form of an event: events written by
// one release are delivered by the next.
func TestEventEncoding(t *testing.T) {
	got := string(encodeEvent("Observation", "o-1", 3))
	want := `{"v":1,"type":"Observation","id":"o-1","version":3}`
	if got != want {
		t.Fatalf("encoded %s, want %s", got, want)
	}
	ev, err := decodeEvent([]byte(want))
	if err != nil || ev != (eventV1{V: 1, Type: "Observation", ID: "o-1", Version: 3}) {
		t.Fatalf("decoded %+v, %v", ev, err)
	}
	if got := string(encodeHandshake()); got != `{"v":1,"kind":"handshake"}` {
		t.Errorf("handshake encoded %s", got)
	}
	if ev, err := decodeEvent([]byte(`{"v":1,"kind":"handshake"}`)); err != nil || ev.Kind != kindHandshake {
		t.Errorf("handshake decoded %+v, %v", ev, err)
	}
	for _, bad := range []string{`{}`, `{"v":2,"type":"A","id":"b","version":1}`, `{"v":1,"kind":"heartbeat"}`, `{"v":1,"kind":"handshake","type":"A","id":"b","version":1}`, `{"v":1,"kind":"x","type":"A","id":"b","version":1}`, `{"v":1,"type":"A","id":"b","version":0}`, `not json`, `{"v":1,"id":"b","version":1}`} {
		if _, err := decodeEvent([]byte(bad)); err == nil {
			t.Errorf("decoded %s", bad)
		}
	}
	if id, ok := subIDOf(streamOf("abc")); !ok || id != "abc" {
		t.Errorf("stream round trip: %q %v", id, ok)
	}
}

// TestSignature checks Sign against HMAC-SHA256 values computed outside
// Go (Python's hmac module) and that Verify refuses any change.
func TestSignature(t *testing.T) {
	const secret = "0123456789abcdef-secret"
	cases := []struct{ id, body, want string }{
		{"ev-1", `{"resourceType":"Observation"}`, "sha256=58b85e8c28aa6a9ac085f5005de653ae5565a354981e4e4381b5bb338a69680e"},
		{"ev-2", ``, "sha256=bdf81307f40640eb970bc897e9c4e730227f2a27809dfb9459a26fdc004b2a10"},
	}
	for _, tc := range cases {
		if got := Sign(secret, tc.id, []byte(tc.body)); got != tc.want {
			t.Errorf("Sign(%s) = %s, want %s", tc.id, got, tc.want)
		}
		if !Verify(secret, tc.id, []byte(tc.body), tc.want) {
			t.Errorf("Verify refused its own signature")
		}
		for _, bad := range [][3]string{{secret + "x", tc.id, tc.body}, {secret, tc.id + "x", tc.body}, {secret, tc.id, tc.body + " "}} {
			if Verify(bad[0], bad[1], []byte(bad[2]), tc.want) {
				t.Errorf("Verify accepted a changed %q", bad)
			}
		}
	}
}

func TestEndpointURL(t *testing.T) {
	strict := endpoints{}
	dev := endpoints{allowLoopback: true}
	lan := endpoints{allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}
	cases := []struct {
		p    endpoints
		url  string
		okay bool
	}{
		{strict, "https://ehr.example.org/hook", true},
		{strict, "https://93.184.216.34/hook", true},
		{strict, "http://ehr.example.org/hook", false},
		{strict, "ftp://ehr.example.org/hook", false},
		{strict, "https://user:pw@ehr.example.org/hook", false},
		{strict, "/relative", false},
		{strict, "https://127.0.0.1/hook", false},
		{strict, "https://[::1]/hook", false},
		{strict, "https://10.1.2.3/hook", false},
		{strict, "https://192.168.0.1/hook", false},
		{strict, "https://169.254.169.254/latest/meta-data", false},
		{strict, "https://100.64.0.1/", false},
		{strict, "https://0.0.0.0/", false},
		{strict, "https://[fe80::1]/", false},
		{strict, "https://[::ffff:127.0.0.1]/", false},
		{strict, "https://224.0.0.1/", false},
		{dev, "http://127.0.0.1:8080/hook", true},
		{dev, "http://localhost:8080/hook", true}, // names are judged at dial time
		{dev, "http://10.1.2.3/hook", false},
		{dev, "https://10.1.2.3/hook", false},
		{lan, "https://10.1.2.3/hook", true},
		{lan, "https://10.2.0.1/hook", false},
		{lan, "http://10.1.2.3/hook", false},
	}
	for _, tc := range cases {
		_, err := tc.p.checkURL(tc.url)
		if (err == nil) != tc.okay {
			t.Errorf("%+v %s: err=%v, want ok=%v", tc.p, tc.url, err, tc.okay)
		}
	}
}

// TestClientDialCheck shows the address is judged at dial time: a name
// that resolves to loopback is refused without the development flag, and
// redirects are not followed.
func TestClientDialCheck(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer ts.Close()
	port := ts.URL[strings.LastIndex(ts.URL, ":"):]
	byName := "http://localhost" + port
	strict := endpoints{}.client(2 * time.Second)
	if _, err := strict.Get(byName); !errors.Is(err, errRefusedAddress) {
		t.Fatalf("strict client reached %s: %v", byName, err)
	}
	dev := endpoints{allowLoopback: true}.client(2 * time.Second)
	resp, err := dev.Get(byName)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d", resp.StatusCode)
	}
	resp, err = dev.Get(ts.URL + "/redirect")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("redirect followed: status %d", resp.StatusCode)
	}
}

func TestBackoff(t *testing.T) {
	s := &Service{cfg: Config{BackoffMin: time.Second, BackoffMax: 8 * time.Second}}
	for n, ceil := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 10: 8 * time.Second, 100: 8 * time.Second} {
		for range 50 {
			d := s.backoff(n)
			if d < ceil/2 || d > ceil {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, ceil/2, ceil)
			}
		}
	}
}

// TestOwnerExtension pins the stored owner extension and its round trip.
func TestOwnerExtension(t *testing.T) {
	o := &owner{Client: "app", Scope: "patient/Observation.rs", Patient: "p1", FHIRUser: "Patient/p1"}
	res := map[string]any{"resourceType": "Subscription"}
	setExt(res, ownerURL, ownerExt(o))
	raw, _ := json.Marshal(res)
	want := `{"extension":[{"extension":[{"url":"client","valueString":"app"},{"url":"scope","valueString":"patient/Observation.rs"},{"url":"patient","valueString":"p1"},{"url":"fhirUser","valueString":"Patient/p1"}],"url":"http://anodyne-fhir.org/fhir/StructureDefinition/subscription-owner"}],"resourceType":"Subscription"}`
	if string(raw) != want {
		t.Fatalf("stored\n%s\nwant\n%s", raw, want)
	}
	back, err := decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := ownerOf(back); !reflect.DeepEqual(got, o) {
		t.Fatalf("round trip %+v, want %+v", got, o)
	}
	setExt(back, ownerURL, nil)
	if _, ok := back["extension"]; ok || ownerOf(back) != nil {
		t.Fatalf("owner not removed: %v", back)
	}
}

// TestLogEntryEncoding pins the stored form of an event log entry
// ($events replays entries written by an earlier release).
func TestLogEntryEncoding(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 5, time.FixedZone("x", 3600))
	got := string(encodeLogEntry(logEntry{Type: "Observation", ID: "o-1", Version: 2, At: at}))
	want := `{"v":1,"type":"Observation","id":"o-1","version":2,"at":"2026-12-01T09:00:00.000000005Z"}`
	if got != want {
		t.Fatalf("encoded %s, want %s", got, want)
	}
	le, err := decodeLogEntry([]byte(want))
	if err != nil || le.Type != "Observation" || le.ID != "o-1" || le.Version != 2 || !le.At.Equal(at) {
		t.Fatalf("decoded %+v, %v", le, err)
	}
	for _, bad := range []string{`{}`, `{"v":2,"type":"A","id":"b","version":1}`, `{"v":1,"type":"A","id":"b","version":0}`, `[]`} {
		if _, err := decodeLogEntry([]byte(bad)); err == nil {
			t.Errorf("decoded %s", bad)
		}
	}
	if k := eventLogKey("s1", 42); k != "subscription/event-log/s1/000000000042" {
		t.Errorf("key %s", k)
	}
}
