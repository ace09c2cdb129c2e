package deid

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/conformance/fhirpath"
)

func decode(t testing.TB, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func rulesFile(rules string) []byte {
	return []byte(`{"version":"t1","parameters":{"restrictedZip3":["036"]},"rules":[` + rules + `]}`)
}

var key = []byte("project-key")

// TestMethods runs each method on a small resource; expected outputs are
// written out by hand (pseudonyms and shifts from the exported formulas).
func TestMethods(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	shift := ShiftDays(key, "Patient/p1", 365)
	shifted := func(layout, v string) string {
		tm, _ := time.Parse(layout, v)
		return tm.AddDate(0, 0, shift).Format(layout)
	}
	cases := []struct {
		name, rules, in, want string
	}{
		{"keep wins over a later redact", `{"path":"Patient.gender","method":"keep"},{"path":"descendants().ofType(code)","method":"redact"}`,
			`{"resourceType":"Patient","id":"p1","gender":"male","language":"en"}`,
			`{"resourceType":"Patient","id":"p1","gender":"male"}`},
		{"redact an object keeps decided children", `{"path":"descendants().ofType(Address).state","method":"keep"},{"path":"descendants().ofType(Address)","method":"redact"}`,
			`{"resourceType":"Patient","id":"p1","address":[{"line":["1 Main"],"city":"X","state":"MA"},{"city":"Y"}]}`,
			`{"resourceType":"Patient","id":"p1","address":[{"state":"MA"}]}`},
		{"cryptoHash id and reference", `{"path":"Resource.id","method":"cryptoHash"},{"path":"descendants().ofType(Reference).reference","method":"cryptoHash"}`,
			`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}`,
			`{"resourceType":"Observation","id":"` + Pseudonym(key, "Observation", "o1") + `","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/` + Pseudonym(key, "Patient", "p1") + `"}}`},
		{"dateShift keeps time and zone", `{"path":"Observation.effective","method":"dateShift"}`,
			`{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p1"},"effectiveDateTime":"2024-03-10T08:15:00+01:00"}`,
			`{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p1"},"effectiveDateTime":"` + shifted(time.RFC3339, "2024-03-10T08:15:00+01:00") + `"}`},
		{"dateShift of a date", `{"path":"Patient.birthDate","method":"dateShift","params":{"maxAge":89}}`,
			`{"resourceType":"Patient","id":"p1","birthDate":"1970-06-01"}`,
			`{"resourceType":"Patient","id":"p1","birthDate":"` + shifted("2006-01-02", "1970-06-01") + `"}`},
		{"over 89 becomes 90 or older", `{"path":"Patient.birthDate","method":"dateShift","params":{"maxAge":89}}`,
			`{"resourceType":"Patient","id":"p1","birthDate":"1930-06-01"}`,
			`{"resourceType":"Patient","id":"p1","_birthDate":{"extension":[{"url":"` + AgeBandExtension + `","valueString":"90 or older"}]}}`},
		{"generalize zip3 and restricted", `{"path":"descendants().ofType(Address).postalCode","method":"generalize","params":{"to":"zip3"}}`,
			`{"resourceType":"Patient","id":"p1","address":[{"postalCode":"02459"},{"postalCode":"03601"}]}`,
			`{"resourceType":"Patient","id":"p1","address":[{"postalCode":"024"},{"postalCode":"000"}]}`},
		{"generalize year", `{"path":"Patient.birthDate","method":"generalize","params":{"to":"year"}}`,
			`{"resourceType":"Patient","id":"p1","birthDate":"1970-06-01"}`,
			`{"resourceType":"Patient","id":"p1","birthDate":"1970"}`},
		{"generalize age band", `{"path":"descendants().ofType(Age)","method":"generalize","params":{"to":"ageBand"}}`,
			`{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"},"onsetAge":{"value":93,"unit":"years","system":"http://unitsofmeasure.org","code":"a"}}`,
			`{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"},"onsetAge":{"value":90,"comparator":">=","unit":"years","system":"http://unitsofmeasure.org","code":"a"}}`},
		{"perturb with zero span and rounding", `{"path":"Observation.value","method":"perturb","params":{"span":0,"roundTo":1}}`,
			`{"resourceType":"Observation","id":"o1","valueQuantity":{"value":7.26,"unit":"score"}}`,
			`{"resourceType":"Observation","id":"o1","valueQuantity":{"value":7.3,"unit":"score"}}`},
		{"substitute", `{"path":"Patient.gender","method":"substitute","params":{"value":"unknown"}}`,
			`{"resourceType":"Patient","id":"p1","gender":"male"}`,
			`{"resourceType":"Patient","id":"p1","gender":"unknown"}`},
		{"redact free text", `{"path":"descendants().ofType(CodeableConcept).text","method":"redact"},{"path":"descendants().ofType(Annotation)","method":"redact"}`,
			`{"resourceType":"Observation","id":"o1","code":{"coding":[{"system":"http://loinc.org","code":"72514-3"}],"text":"pain"},"note":[{"text":"hurts"}]}`,
			`{"resourceType":"Observation","id":"o1","code":{"coding":[{"system":"http://loinc.org","code":"72514-3"}]}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := New(rulesFile(tc.rules), WithNow(func() time.Time { return now }))
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := d.Apply(decode(t, tc.in), key)
			if err != nil {
				t.Fatal(err)
			}
			delete(got, "meta")
			want := decode(t, tc.want)
			if !reflect.DeepEqual(got, want) {
				g, _ := json.Marshal(got)
				t.Errorf("got  %s\nwant %s", g, tc.want)
			}
		})
	}
}

func TestPerturbStaysInSpan(t *testing.T) {
	d, err := New(rulesFile(`{"path":"Observation.value","method":"perturb","params":{"span":0.1,"kind":"proportional","roundTo":2}}`))
	if err != nil {
		t.Fatal(err)
	}
	differ := false
	for range 50 {
		got, _, _ := d.Apply(decode(t, `{"resourceType":"Observation","id":"o","valueQuantity":{"value":100}}`), key)
		v, _ := number(got["valueQuantity"].(map[string]any)["value"])
		if v < 90 || v > 110 {
			t.Fatalf("perturbed 100 by 10%% to %v", v)
		}
		differ = differ || v != 100
	}
	if !differ {
		t.Error("perturb never changed the value")
	}
}

func TestLabels(t *testing.T) {
	d, err := New(DefaultRules())
	if err != nil {
		t.Fatal(err)
	}
	got, res, err := d.Apply(decode(t, `{"resourceType":"Patient","id":"p1","name":[{"family":"Doe"}]}`), key)
	if err != nil {
		t.Fatal(err)
	}
	meta, _ := json.Marshal(got["meta"])
	for _, want := range []string{`"REDACTED"`, `"PSEUDED"`, `"` + d.Version() + `"`, RulesTagSystem} {
		if !strings.Contains(string(meta), want) {
			t.Errorf("meta %s lacks %s", meta, want)
		}
	}
	if res.Pseudonyms["Patient/"+Pseudonym(key, "Patient", "p1")] != "Patient/p1" {
		t.Errorf("pseudonyms %v", res.Pseudonyms)
	}
}

func TestPseudonymsPerProject(t *testing.T) {
	a, b := Pseudonym([]byte("a"), "Patient", "p1"), Pseudonym([]byte("b"), "Patient", "p1")
	if a == b || a != Pseudonym([]byte("a"), "Patient", "p1") || a == Pseudonym([]byte("a"), "Patient", "p2") {
		t.Errorf("pseudonyms not keyed per project: %s %s", a, b)
	}
	if !fhirIDPattern(a) {
		t.Errorf("pseudonym %q is not a FHIR id", a)
	}
}

func fhirIDPattern(s string) bool {
	return len(s) > 0 && len(s) <= 64 && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") == ""
}

func TestRuleFileErrors(t *testing.T) {
	cases := []struct {
		name, file string
		line       int
		reason     string
	}{
		{"not json", "{\n\"version\": \"x\",\n\"rules\": [\n{\"path\": \"Patient.name\" \"method\": \"redact\"}]}", 4, "not valid JSON"},
		{"unknown method", "{\"version\": \"x\",\n\"rules\": [\n  {\"path\": \"Patient.name\", \"method\": \"redact\"},\n  {\"path\": \"Patient.name\", \"method\": \"shred\"}\n]}", 4, `unknown method "shred"`},
		{"bad fhirpath", "{\"version\": \"x\",\n\"rules\": [\n  {\"path\": \"Patient.name.where(\", \"method\": \"redact\"}\n]}", 3, "does not compile"},
		{"bad params", "{\"version\": \"x\",\n\"rules\": [{\"path\": \"Patient.birthDate\", \"method\": \"generalize\", \"params\": {\"to\": \"decade\"}}]}", 2, "generalize needs"},
		{"unknown field", "{\"version\": \"x\", \"rulez\": []}", 0, "unknown field"},
		{"no version", "{\"rules\": []}", 0, "version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New([]byte(tc.file))
			var re *RuleError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v, want a RuleError", err)
			}
			if re.Line != tc.line || !strings.Contains(re.Reason, tc.reason) {
				t.Errorf("got line %d %q, want line %d containing %q", re.Line, re.Reason, tc.line, tc.reason)
			}
		})
	}
}

// TestFastPathMatchesEvaluator holds the typed walk that answers
// descendants().ofType(T) to what the FHIRPath engine selects.
func TestFastPathMatchesEvaluator(t *testing.T) {
	d, err := New(DefaultRules())
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range syntheaResources(t) {
		for _, ru := range d.rules {
			if ru.fastType == "" || ru.member != "" || d.model.IsPrimitive(ru.fastType) {
				continue
			}
			r := d.newRun(res, key)
			r.index(res, r.typ)
			fast := map[uintptr]bool{}
			for _, tm := range r.objects[ru.index] {
				fast[ptr(tm.m)] = true
			}
			nodes, err := ru.expr.Evaluate(res)
			if err != nil {
				t.Fatal(err)
			}
			slow := map[uintptr]bool{}
			for _, n := range nodes {
				if m, ok := n.Value().(map[string]any); ok {
					slow[ptr(m)] = true
				}
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("%s on %s/%s: typed walk found %d nodes, the evaluator %d", ru.spec.Path, res["resourceType"], res["id"], len(fast), len(slow))
			}
		}
	}
	_ = fhirpath.Parse
}

// TestNavigateMatchesEvaluator holds the walk that answers a rule's
// parent path of the form Type.a.b to what the FHIRPath engine selects,
// nodes and types, on every test resource, for the default rules and for
// paths through nested, repeating and contained elements.
func TestNavigateMatchesEvaluator(t *testing.T) {
	extra := `{"path":"Observation.component.code.text","method":"redact"},{"path":"DomainResource.contained.meta.source","method":"redact"},` +
		`{"path":"Patient.contact.name.family","method":"redact"},{"path":"Bundle.entry.resource.id","method":"keep"},{"path":"Observation.value.unit","method":"keep"}`
	var rules []string
	for _, ru := range mustDefault(t).rules {
		raw, _ := json.Marshal(ru.spec)
		rules = append(rules, string(raw))
	}
	d, err := New(rulesFile(strings.Join(rules, ",") + "," + extra))
	if err != nil {
		t.Fatal(err)
	}
	simple, found := 0, 0
	for _, res := range goldenInputs(t) {
		for i := range d.rules {
			ru := &d.rules[i]
			if ru.parent == nil || ru.fastType != "" {
				continue
			}
			r := d.newRun(res, key)
			fast, ok := r.navigate(ru)
			if !ok {
				if ru.lead != "" && ru.spec.Path != "Observation.value.unit" {
					t.Fatalf("%s on %s: the walk gave up", ru.spec.Path, res["resourceType"])
				}
				continue
			}
			simple++
			found += len(fast)
			nodes, err := ru.parent.Evaluate(res)
			if err != nil {
				t.Fatal(err)
			}
			var slow []typed
			for _, n := range nodes {
				if m, ok := n.Value().(map[string]any); ok {
					slow = append(slow, typed{m, n.Type()})
				}
			}
			if len(fast) != len(slow) {
				t.Fatalf("%s on %s/%s: the walk found %d objects, the evaluator %d", ru.spec.Path, res["resourceType"], res["id"], len(fast), len(slow))
			}
			for j := range fast {
				if ptr(fast[j].m) != ptr(slow[j].m) || fast[j].typ != slow[j].typ {
					t.Fatalf("%s on %s/%s: object %d is %s, the evaluator's %s", ru.spec.Path, res["resourceType"], res["id"], j, fast[j].typ, slow[j].typ)
				}
			}
		}
	}
	if simple < 1000 || found < 500 {
		t.Fatalf("only %d walks compared, %d objects found", simple, found)
	}
	t.Logf("%d walks compared, %d objects found", simple, found)
}

func mustDefault(t *testing.T) *Deidentifier {
	t.Helper()
	d, err := New(DefaultRules())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func syntheaResources(t testing.TB) []map[string]any {
	t.Helper()
	files, _ := filepath.Glob("../testdata/synthea/*.json")
	var out []map[string]any
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b := decode(t, string(raw))
		entries, _ := b["entry"].([]any)
		for _, e := range entries {
			if r, ok := e.(map[string]any)["resource"].(map[string]any); ok {
				out = append(out, r)
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no Synthea resources in ../testdata/synthea")
	}
	return out
}
