package auth

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
)

// world is a small set of real resources, indexed by the real registry,
// against which each decision's filter is evaluated with storage.Matches.
var worldJSON = []string{
	`{"resourceType":"Patient","id":"a","name":[{"family":"Alpha"}]}`,
	`{"resourceType":"Patient","id":"b","name":[{"family":"Beta"}]}`,
	`{"resourceType":"Observation","id":"a-vital","status":"final","subject":{"reference":"Patient/a"},
	  "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
	  "code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]}}`,
	`{"resourceType":"Observation","id":"a-lab","status":"final","subject":{"reference":"Patient/a"},
	  "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],
	  "code":{"coding":[{"system":"http://loinc.org","code":"2345-7"}]}}`,
	`{"resourceType":"Observation","id":"b-vital","status":"final","subject":{"reference":"Patient/b"},
	  "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
	  "code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]}}`,
	`{"resourceType":"Condition","id":"a-cond","subject":{"reference":"Patient/a"},"code":{"text":"pain"}}`,
	`{"resourceType":"Condition","id":"b-cond","subject":{"reference":"Patient/b"},"code":{"text":"pain"}}`,
	`{"resourceType":"Medication","id":"med","code":{"text":"ibuprofen"}}`,
}

type indexed struct {
	typ, id string
	entries []storage.Entry
}

func loadWorld(t *testing.T, reg *resources.Registry) []indexed {
	t.Helper()
	var out []indexed
	for _, js := range worldJSON {
		var res map[string]any
		dec := json.NewDecoder(stringsReader(js))
		dec.UseNumber()
		if err := dec.Decode(&res); err != nil {
			t.Fatal(err)
		}
		typ, id := res["resourceType"].(string), res["id"].(string)
		e, err := reg.Index(typ, res)
		if err != nil {
			t.Fatalf("index %s/%s: %v", typ, id, err)
		}
		out = append(out, indexed{typ, id, e})
	}
	return out
}

func visible(t *testing.T, d Decision, world []indexed, typ string) []string {
	t.Helper()
	if !d.Allowed {
		return nil
	}
	var ids []string
	for _, r := range world {
		if r.typ != typ {
			continue
		}
		ok, err := storage.Matches(d.Filter, r.id, r.entries)
		if err != nil {
			t.Fatalf("Matches(%v): %v", d.Filter, err)
		}
		if ok {
			ids = append(ids, r.id)
		}
	}
	sort.Strings(ids)
	return ids
}

func TestPolicyDecide(t *testing.T) {
	reg, err := resources.Load()
	if err != nil {
		t.Fatal(err)
	}
	world := loadWorld(t, reg)
	pol := NewPolicy(reg)
	const vital = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
	tests := []struct {
		name     string
		scopes   string
		patient  string
		fhirUser string
		action   string
		typ      string
		want     []string // visible ids; nil = denied
	}{
		{"v1 patient read allows own observations", "patient/Observation.read", "a", "", "search", "Observation", []string{"a-lab", "a-vital"}},
		{"v1 patient read denies create", "patient/Observation.read", "a", "", "create", "Observation", nil},
		{"v1 patient read denies other types", "patient/Observation.read", "a", "", "read", "Condition", nil},
		{"v1 patient wildcard", "patient/*.read", "b", "", "read", "Condition", []string{"b-cond"}},
		{"patient scope on Patient is the patient only", "patient/Patient.r", "a", "", "read", "Patient", []string{"a"}},
		{"patient scope without patient grants nothing", "patient/Observation.rs", "", "", "search", "Observation", nil},
		{"patient scope on a type outside the compartment", "patient/*.rs", "a", "", "search", "Medication", nil},
		{"v2 letters: s without r denies read", "patient/Observation.s", "a", "", "read", "Observation", nil},
		{"v2 letters: s allows search", "patient/Observation.s", "a", "", "search", "Observation", []string{"a-lab", "a-vital"}},
		{"v2 c allows create in compartment", "patient/Observation.c", "a", "", "create", "Observation", []string{"a-lab", "a-vital"}},
		{"v2 d denies update", "patient/Observation.d", "a", "", "update", "Observation", nil},
		{"query-limited keeps vital signs only", vital, "a", "", "search", "Observation", []string{"a-vital"}},
		{"query-limited denies other types", vital, "a", "", "search", "Condition", nil},
		{"query-limited plus unrestricted scope unions", vital + " patient/Observation.r", "a", "", "read", "Observation", []string{"a-lab", "a-vital"}},
		{"query-limited search does not widen by read", vital + " patient/Observation.r", "a", "", "search", "Observation", []string{"a-vital"}},
		{"user scope for practitioner sees all", "user/Observation.rs", "", "Practitioner/p1", "search", "Observation", []string{"a-lab", "a-vital", "b-vital"}},
		{"user scope for patient user sees own", "user/*.cruds", "", "Patient/b", "search", "Observation", []string{"b-vital"}},
		{"user scope without fhirUser grants nothing", "user/*.rs", "", "", "search", "Observation", nil},
		{"user scope for related person is limited to the patient in context", "user/*.rs", "b", "RelatedPerson/r1", "search", "Observation", []string{"b-vital"}},
		{"user v1 write denies read", "user/*.write", "", "Practitioner/p1", "read", "Observation", nil},
		{"system wildcard", "system/*.*", "", "", "search", "Condition", []string{"a-cond", "b-cond"}},
		{"system read denies delete", "system/*.read", "", "", "delete", "Condition", nil},
		{"system-level search needs wildcard", "system/Observation.rs", "", "", "search", "", nil},
		{"system-level search with wildcard", "system/*.rs", "", "", "search", "", []string{}},
		{"patient wildcard cannot open system-level search", "patient/*.rs", "a", "", "search", "", nil},
		{"malformed scope grants nothing", "patient/Observation.sr", "a", "", "search", "Observation", nil},
		{"audit trail closed to wildcards", "system/*.*", "", "", "search", "AuditEvent", nil},
		{"audit trail closed to patient scopes", "patient/AuditEvent.rs", "a", "", "search", "AuditEvent", nil},
		{"audit trail open to an explicit admin scope", "system/AuditEvent.rs", "", "", "search", "AuditEvent", []string{}},
		{"system query-limited", "system/Observation.rs?code=http://loinc.org|2345-7", "", "", "search", "Observation", []string{"a-lab"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := WithPrincipal(context.Background(), &Principal{
				ClientID: "app", Scopes: ParseScopes(tt.scopes), Patient: tt.patient, FHIRUser: tt.fhirUser,
			})
			d, err := pol.Decide(ctx, tt.action, tt.typ)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == nil {
				if d.Allowed {
					t.Fatalf("allowed with filter %v, want denied", d.Filter)
				}
				if d.Reason == "" {
					t.Error("denial without a reason")
				}
				return
			}
			if !d.Allowed {
				t.Fatalf("denied (%s), want %v", d.Reason, tt.want)
			}
			if tt.typ == "" {
				if d.Filter != nil {
					t.Errorf("system-level filter %v, want none", d.Filter)
				}
				return
			}
			if got := visible(t, d, world, tt.typ); !slices.Equal(got, tt.want) {
				t.Errorf("visible = %v, want %v (filter %v)", got, tt.want, d.Filter)
			}
		})
	}
}

func TestPolicyDecideWithoutPrincipal(t *testing.T) {
	d, err := NewPolicy(nil).Decide(context.Background(), "read", "Patient")
	if err != nil || d.Allowed {
		t.Fatalf("Decide without principal = %+v, %v; want denied", d, err)
	}
	if _, err := NewPolicy(nil).Decide(context.Background(), "frobnicate", "Patient"); err == nil {
		t.Fatal("unknown action accepted")
	}
}

func TestSplitValues(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"a", []string{"a"}},
		{"a,b", []string{"a", "b"}},
		{`a\,b,c`, []string{`a\,b`, "c"}},
		{"http://x|y,http://x|z", []string{"http://x|y", "http://x|z"}},
	}
	for _, tt := range tests {
		if got := splitValues(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("splitValues(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }
