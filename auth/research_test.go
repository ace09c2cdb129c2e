package auth

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestResearchDecide: a research Principal may read and search within its
// scopes, never write; an aggregates-only one gets no row at all.
func TestResearchDecide(t *testing.T) {
	p := NewPolicy(nil)
	cases := []struct {
		access, action string
		allowed        bool
	}{
		{ResearchRows, "read", true}, {ResearchRows, "search", true},
		{ResearchRows, "create", false}, {ResearchRows, "update", false}, {ResearchRows, "delete", false},
		{ResearchAggregates, "read", false}, {ResearchAggregates, "search", false}, {ResearchAggregates, "create", false},
		{ResearchAggregates, "aggregate", true}, {ResearchRows, "aggregate", true},
		{"", "create", true}, // not a research client: the scope decides
	}
	for _, tc := range cases {
		pr := &Principal{ClientID: "c", Subject: "c", Scopes: ParseScopes("system/*.cruds"), ResearchAccess: tc.access}
		if tc.access != "" {
			pr.ResearchProject = "knee-pain"
		}
		d, err := p.Decide(WithPrincipal(context.Background(), pr), tc.action, "Observation")
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != tc.allowed {
			t.Errorf("%q %s: allowed=%v (%s), want %v", tc.access, tc.action, d.Allowed, d.Reason, tc.allowed)
		}
	}
}

// TestResearchAuditEvent: the audit record of a research request carries
// purposeOfUse research and names the project.
func TestResearchAuditEvent(t *testing.T) {
	ctx := WithPrincipal(context.Background(), &Principal{ClientID: "study", Subject: "study", ResearchProject: "knee-pain", ResearchAccess: ResearchRows})
	ev := NewAuditEvent(ctx, "search-type", "E", "Observation")
	ev.Outcome = 400
	raw, _ := json.Marshal(ev.Resource())
	for _, want := range []string{`"code":"HRESCH"`, `"purposeOfEvent"`, `"value":"knee-pain"`, ResearchProjectSystem, `"value":"study"`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("AuditEvent lacks %s: %s", want, raw)
		}
	}
	plain := NewAuditEvent(WithPrincipal(context.Background(), &Principal{ClientID: "app"}), "read", "R", "Patient")
	if raw, _ := json.Marshal(plain.Resource()); strings.Contains(string(raw), "HRESCH") {
		t.Errorf("a non-research event claims research: %s", raw)
	}
}

func TestValidResearchProject(t *testing.T) {
	for name, ok := range map[string]bool{
		"knee-pain": true, "K2": true, "back_pain.2024": true, strings.Repeat("p", 64): true,
		"": false, "-x": false, ".x": false, "a/b": false, "a b": false, "ä": false, strings.Repeat("p", 65): false, "a\x00": false,
	} {
		if err := ValidResearchProject(name); (err == nil) != ok {
			t.Errorf("ValidResearchProject(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}
