package fhir

import (
	"context"
	"net/http"
	"net/url"
	"testing"
)

func TestParseEntryURL(t *testing.T) {
	s := &Server{base: "http://h/fhir"}
	tests := []struct {
		method, url string
		status      int // 0: accepted
		typ, id     string
		query       string
	}{
		{"POST", "Patient", 0, "Patient", "", ""},
		{"POST", "http://h/fhir/Patient", 0, "Patient", "", ""},
		{"POST", "/Patient", 0, "Patient", "", ""},
		{"PUT", "Patient/12", 0, "Patient", "12", ""},
		{"PUT", "Patient?identifier=a%7C1&_format=json", 0, "Patient", "", "identifier=a%7C1"},
		{"DELETE", "Observation?code=1", 0, "Observation", "", "code=1"},
		{"PATCH", "Patient/12", 0, "Patient", "12", ""},
		{"GET", "Patient?name=x", 0, "", "", ""},
		{"POST", "Patient/12", http.StatusBadRequest, "", "", ""},
		{"PUT", "Patient", http.StatusBadRequest, "", "", ""},
		{"PUT", "Patient?_format=json", http.StatusBadRequest, "", "", ""},
		{"PUT", "Patient/bad id", http.StatusBadRequest, "", "", ""},
		{"DELETE", "Unicorn/1", http.StatusNotFound, "", "", ""},
		{"GET", "http://elsewhere/fhir/Patient/1", http.StatusBadRequest, "", "", ""},
		{"GET", "Patient/../metadata", http.StatusBadRequest, "", "", ""},
		{"GET", "", http.StatusBadRequest, "", "", ""},
		{"BREW", "Patient", http.StatusBadRequest, "", "", ""},
		{"PATCH", "Patient/1/2", http.StatusBadRequest, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.url, func(t *testing.T) {
			e := &txEntry{method: tt.method, url: tt.url}
			err := s.parseEntryURL(e)
			if tt.status != 0 {
				fe, ok := err.(*Error)
				if !ok || fe.Status != tt.status {
					t.Fatalf("error %v, want status %d", err, tt.status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.typ != tt.typ || e.id != tt.id || (e.query == nil) != (tt.query == "") || (e.query != nil && e.query.Encode() != tt.query) {
				t.Errorf("got type %q id %q query %v", e.typ, e.id, e.query)
			}
		})
	}
}

func TestClaimKey(t *testing.T) {
	q := func(s string) url.Values {
		v, err := ConditionalParams("Observation", s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		return v
	}
	tests := []struct {
		a, b string
		same bool
	}{
		{"identifier=a|1", "Observation?identifier=a%7C1", true},
		{"identifier=a|1&status=final", "status=final&identifier=a|1", true},
		{"identifier=a|1&_format=json", "identifier=a|1", true},
		{"identifier=a|1", "identifier=a|2", false},
		{"identifier=a|1", "identifier=a|1&status=final", false},
	}
	for _, tt := range tests {
		if got := claimKey("Observation", q(tt.a)) == claimKey("Observation", q(tt.b)); got != tt.same {
			t.Errorf("%s vs %s: same key %v, want %v", tt.a, tt.b, got, tt.same)
		}
	}
	if claimKey("Observation", q("identifier=a|1")) == claimKey("Patient", q("identifier=a|1")) {
		t.Error("the key does not depend on the type")
	}
	for _, bad := range []string{"", "_format=json", "a=%zz"} {
		if _, err := ConditionalParams("Observation", bad); err == nil {
			t.Errorf("%q accepted as criteria", bad)
		}
	}
}

func TestRewriteRefs(t *testing.T) {
	s := &Server{base: "http://h/fhir"}
	refs := map[string]string{
		"urn:uuid:p":                 "Patient/1",
		"http://other/fhir/Device/9": "Device/2",
	}
	res := map[string]any{
		"resourceType": "Observation",
		"subject":      map[string]any{"reference": "urn:uuid:p", "display": "urn:uuid:p"},
		"device":       map[string]any{"reference": "http://other/fhir/Device/9"},
		"performer":    []any{map[string]any{"reference": "Practitioner/7"}, map[string]any{"reference": "#contained"}},
		"focus":        []any{"urn:uuid:p", "urn:uuid:unknown"},
	}
	if err := s.rewriteRefs(context.Background(), res, refs, map[string]string{}); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		got, want any
	}{
		{res["subject"].(map[string]any)["reference"], "Patient/1"},
		{res["subject"].(map[string]any)["display"], "http://h/fhir/Patient/1"},
		{res["device"].(map[string]any)["reference"], "Device/2"},
		{res["performer"].([]any)[0].(map[string]any)["reference"], "Practitioner/7"},
		{res["performer"].([]any)[1].(map[string]any)["reference"], "#contained"},
		{res["focus"].([]any)[0], "http://h/fhir/Patient/1"},
		{res["focus"].([]any)[1], "urn:uuid:unknown"},
	}
	for i, c := range checks {
		if c.got != c.want {
			t.Errorf("check %d: %v, want %v", i, c.got, c.want)
		}
	}
	bad := map[string]any{"subject": map[string]any{"reference": "urn:uuid:nowhere"}}
	if err := s.rewriteRefs(context.Background(), bad, refs, map[string]string{}); err == nil {
		t.Error("an unresolvable urn:uuid reference was accepted")
	}
}
