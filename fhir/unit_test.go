package fhir

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestEncodeResource(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want string
	}{
		{"resourceType first", `{"id":"1","resourceType":"Patient","active":true}`, `{"resourceType":"Patient","id":"1","active":true}`},
		{"id and meta lead", `{"b":1,"meta":{"versionId":"2"},"a":2,"id":"x","resourceType":"Patient"}`, `{"resourceType":"Patient","id":"x","meta":{"versionId":"2"},"a":2,"b":1}`},
		{"empty arrays and objects left out", `{"resourceType":"Bundle","type":"searchset","entry":[],"meta":{},"link":[{"relation":"self"}]}`, `{"resourceType":"Bundle","link":[{"relation":"self"}],"type":"searchset"}`},
		{"decimal text kept", `{"value":1.50,"big":12345678901234567890,"exp":1e-7}`, `{"big":12345678901234567890,"exp":1e-7,"value":1.50}`},
		{"nested resources", `{"contained":[{"id":"a","resourceType":"Patient"}],"resourceType":"Observation"}`, `{"resourceType":"Observation","contained":[{"resourceType":"Patient","id":"a"}]}`},
		{"no html escaping", `{"div":"<div>a & b</div>"}`, `{"div":"<div>a & b</div>"}`},
		{"control characters", `{"s":"a\"b\\c\n\t\u0001é"}`, `{"s":"a\"b\\c\n\t\u0001é"}`},
		{"null and bools", `{"a":null,"b":[true,false]}`, `{"a":null,"b":[true,false]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := DecodeJSON([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			got, err := EncodeResource(v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
	if _, err := DecodeJSON([]byte(`{} {}`)); err == nil {
		t.Error("trailing data accepted")
	}
}

func TestCursor(t *testing.T) {
	s := &Server{cursorKey: []byte("k1")}
	other := &Server{cursorKey: []byte("k2")}
	tok := s.sealCursor("search /Patient?family=a", "backend-cursor-42")
	cases := []struct {
		name    string
		srv     *Server
		binding string
		token   string
		ok      bool
	}{
		{"same query", s, "search /Patient?family=a", tok, true},
		{"other query", s, "search /Patient?family=b", tok, false},
		{"other server key", other, "search /Patient?family=a", tok, false},
		{"tampered payload", s, "search /Patient?family=a", "eA" + tok, false},
		{"garbage", s, "search /Patient?family=a", "nodot", false},
		{"empty", s, "search /Patient?family=a", "", false},
	}
	// The backend cursor is not readable from the token.
	if raw, _ := base64.RawURLEncoding.DecodeString(strings.SplitN(tok, ".", 2)[0]); strings.Contains(string(raw), "backend-cursor-42") {
		t.Error("the sealed cursor shows the backend cursor in clear")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.srv.openCursor(tc.binding, tc.token)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && got != "backend-cursor-42" {
				t.Errorf("cursor %q", got)
			}
		})
	}
}

func TestCanonicalQuery(t *testing.T) {
	q := url.Values{"b": {"2"}, "a": {"x y", "z"}, "_cursor": {"c"}, "_format": {"json"}, "_pretty": {"true"}}
	if got, want := canonicalQuery(q), "a=x+y&a=z&b=2"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParseETag(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{`W/"3"`, 3, true}, {`"12"`, 12, true}, {`7`, 7, true}, {` W/"1" `, 1, true},
		{`W/"0"`, 0, false}, {`W/"-1"`, 0, false}, {`W/"abc"`, 0, false}, {``, 0, false},
	}
	for _, tc := range cases {
		got, ok := ParseETag(tc.in)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("ParseETag(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNegotiation(t *testing.T) {
	accept := []struct {
		in   string
		want string
		ok   bool
	}{
		{"application/fhir+json", mimeFHIRJSON, true},
		{"application/json", mimeJSON, true},
		{"text/html, */*;q=0.8", mimeFHIRJSON, true},
		{"application/fhir+xml", "", false},
		{"application/fhir+xml, application/fhir+json;q=0.5", mimeFHIRJSON, true},
		{"application/json;q=0", "", false},
		{";;;", "", false},
	}
	for _, tc := range accept {
		got, ok := acceptable(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("acceptable(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	formats := []struct {
		in string
		ok bool
	}{{"json", true}, {"application/fhir+json", true}, {"application/fhir json", true}, {"application/json", true}, {"xml", false}, {"html", false}}
	for _, tc := range formats {
		if _, ok := formatParam(tc.in); ok != tc.ok {
			t.Errorf("formatParam(%q) ok=%v", tc.in, ok)
		}
	}
}

func TestValidID(t *testing.T) {
	cases := map[string]bool{
		"a": true, "A-1.b": true, "123e4567-e89b-12d3-a456-426614174000": true,
		"": false, "a_b": false, "a b": false, "é": false, "a/b": false,
		string(make([]byte, 65)): false,
	}
	long := ""
	for len(long) < 64 {
		long += "a"
	}
	cases[long] = true
	for id, want := range cases {
		if got := ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestParseDateTime(t *testing.T) {
	cases := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2024", time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{"2024-03", time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC), true},
		{"2024-03-02", time.Date(2024, 3, 2, 0, 0, 0, 0, time.UTC), true},
		{"2024-03-02T10:00:00+02:00", time.Date(2024, 3, 2, 8, 0, 0, 0, time.UTC), true},
		{"2024-03-02T10:00:00.123Z", time.Date(2024, 3, 2, 10, 0, 0, 123e6, time.UTC), true},
		{"yesterday", time.Time{}, false},
		{"2024-13", time.Time{}, false},
	}
	for _, tc := range cases {
		got, err := parseDateTime(tc.in)
		if (err == nil) != tc.ok || !got.Equal(tc.want) {
			t.Errorf("parseDateTime(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func TestRandomID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		id := randomID()
		if !ValidID(id) || len(id) != 36 || id[14] != '4' {
			t.Fatalf("randomID %q is not a v4 UUID usable as an R4 id", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
}
