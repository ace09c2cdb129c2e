package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

func newTestValidator(t testing.TB) *Validator {
	t.Helper()
	v, err := NewValidator()
	if err != nil {
		t.Fatalf("NewValidator: %v", err)
	}
	return v
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("reading test data: %v", err)
	}
	return b
}

func formatIssues(issues []Issue) string {
	var b strings.Builder
	for _, is := range issues {
		fmt.Fprintf(&b, "\n  %s %s %q: %s", is.Severity, is.Code, is.Expression, is.Diagnostics)
	}
	return b.String()
}

func findIssue(issues []Issue, expression, code string) bool {
	for _, is := range issues {
		if is.Severity == "error" && is.Expression == expression && is.Code == code {
			return true
		}
	}
	return false
}

// knownInvalidExamples are official R4 examples that break the R4 definitions
// themselves; each is checked in profiles-resources.json.
var knownInvalidExamples = map[string]struct{ expression, code, why string }{
	"MedicationRequest-medrx0301.json": {"MedicationRequest.dispenseRequest.performer", "value",
		"dispenseRequest.performer is Reference(Organization); the example points to a Practitioner"},
	"Observation-clinical-gender.json": {"Observation.performer[0]", "value",
		"Observation.performer does not allow Reference(Encounter)"},
	"DeviceMetric-example.json": {"DeviceMetric.parent", "value",
		"DeviceMetric.parent is Reference(Device); the example points to a DeviceDefinition"},
	"Questionnaire-qs1.json": {"Questionnaire.item[0].item[0].linkId", "required",
		"Questionnaire.item.linkId is 1..1; nested items of the example have none"},
}

func TestOfficialExamples(t *testing.T) {
	v := newTestValidator(t)
	files, err := filepath.Glob("testdata/examples/*.json")
	if err != nil || len(files) < 200 {
		t.Fatalf("expected the official examples under testdata/examples, found %d (%v)", len(files), err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(strings.TrimSuffix(name, ".json"), func(t *testing.T) {
			parsed, issues := v.Validate(context.Background(), readFile(t, f))
			if want, bad := knownInvalidExamples[name]; bad {
				if !findIssue(issues, want.expression, want.code) {
					t.Errorf("known invalid (%s): want %s issue at %q, got:%s", want.why, want.code, want.expression, formatIssues(issues))
				}
				return
			}
			if HasErrors(issues) {
				t.Errorf("valid example rejected:%s", formatIssues(issues))
			}
			if !IsResourceType(parsed.Type) || parsed.Resource == nil {
				t.Errorf("Parsed = {%q, %q, %v}, want a known type and a decoded resource", parsed.Type, parsed.ID, parsed.Resource != nil)
			}
		})
	}
}

func TestValidInputs(t *testing.T) {
	v := newTestValidator(t)
	tests := []struct {
		file     string
		wantType string
		wantID   string
	}{
		{"observation-pain.json", "Observation", "pain-1"},
		{"capabilitystatement-401.json", "CapabilityStatement", ""},
		{"parameters-with-resource.json", "Parameters", ""},
		{"observation-contained.json", "Observation", "pain-1"},
		{"observation-decimal.json", "Observation", ""},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			parsed, issues := v.Validate(context.Background(), readFile(t, filepath.Join("testdata/valid", tt.file)))
			if HasErrors(issues) {
				t.Fatalf("rejected:%s", formatIssues(issues))
			}
			if parsed.Type != tt.wantType || parsed.ID != tt.wantID {
				t.Errorf("Parsed type/id = %q/%q, want %q/%q", parsed.Type, parsed.ID, tt.wantType, tt.wantID)
			}
		})
	}
}

func TestDecimalsKeepTheirText(t *testing.T) {
	v := newTestValidator(t)
	parsed, issues := v.Validate(context.Background(), readFile(t, "testdata/valid/observation-decimal.json"))
	if HasErrors(issues) {
		t.Fatalf("rejected:%s", formatIssues(issues))
	}
	q, _ := parsed.Resource["valueQuantity"].(map[string]any)
	n, ok := q["value"].(json.Number)
	if !ok || n.String() != "37.50" {
		t.Errorf("valueQuantity.value = %#v, want json.Number(\"37.50\")", q["value"])
	}
}

func TestBrokenInputs(t *testing.T) {
	v := newTestValidator(t)
	tests := []struct {
		file, expression, code string
	}{
		{"wrong-type.json", "Observation.valueQuantity.value", "structure"},
		{"missing-status.json", "Observation.status", "required"},
		{"bad-date.json", "Patient.birthDate", "value"},
		{"unknown-element.json", "Observation.painLevel", "structure"},
		{"unknown-resourcetype.json", "resourceType", "not-supported"},
		{"missing-resourcetype.json", "resourceType", "required"},
		{"bad-id.json", "Patient.id", "value"},
		{"value-twice.json", "Observation.value[x]", "structure"},
		{"wrong-reference-target.json", "Observation.subject", "value"},
		{"contained-error.json", "Observation.contained[0].status", "required"},
		{"parameters-invalid-resource.json", "Parameters.parameter[0].resource.birthDate", "value"},
		{"parameters-invalid-part.json", "Parameters.parameter[1].part[0].resource.gender", "code-invalid"},
		{"bundle-entry-error.json", "Bundle.entry[1].resource.subject", "value"},
		{"bundle-entry-unknown-type.json", "Bundle.entry[0].resource.resourceType", "not-supported"},
		{"bad-status-code.json", "Observation.status", "code-invalid"},
		{"fhirversion-unknown.json", "CapabilityStatement.fhirVersion", "code-invalid"},
		{"negative-positiveint.json", "Patient.photo[0].size", "value"},
		{"duplicate-key.json", "Observation.status", "structure"},
		{"null-value.json", "Observation.issued", "structure"},
		{"empty-array.json", "Observation.category", "structure"},
		{"empty-object.json", "Observation.code", "structure"},
		{"empty-string.json", "Patient.gender", "value"},
		{"not-an-object.json", "", "structure"},
		{"trailing-data.json", "Patient", "structure"},
		{"truncated.json", "Patient.name", "structure"},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		seen[tt.file] = true
		t.Run(tt.file, func(t *testing.T) {
			_, issues := v.Validate(context.Background(), readFile(t, filepath.Join("testdata/broken", tt.file)))
			if !HasErrors(issues) {
				t.Fatalf("accepted; want a %s error at %q", tt.code, tt.expression)
			}
			if !findIssue(issues, tt.expression, tt.code) {
				t.Errorf("want a %s error at %q, got:%s", tt.code, tt.expression, formatIssues(issues))
			}
		})
	}
	files, _ := filepath.Glob("testdata/broken/*.json")
	for _, f := range files {
		if !seen[filepath.Base(f)] {
			t.Errorf("%s has no expectation in this table", f)
		}
	}
}

// TestStrictPass covers the JSON rules the table of files cannot express
// compactly, such as generated nesting depth.
func TestStrictPass(t *testing.T) {
	deep := func(n int) string {
		return `{"resourceType":"Basic","code":{"text":"x"},"extension":` +
			strings.Repeat(`[{"url":"u","extension":`, n) + `[{"url":"u","valueString":"x"}]` + strings.Repeat(`}]`, n) + `}`
	}
	tests := []struct {
		name, body, expression, code string
	}{
		{"depth over limit", deep(60), "Basic", "too-costly"},
		{"top-level string", `"Patient"`, "", "structure"},
		{"top-level null", `null`, "", "structure"},
		{"empty body", ``, "", "structure"},
		{"null in array", `{"resourceType":"Patient","name":[{"given":["a",null]}]}`, "Patient.name[0].given[1]", "not-supported"},
		{"duplicate in nested object", `{"resourceType":"Patient","name":[{"family":"a","family":"b"}]}`, "Patient.name[0].family", "structure"},
		{"empty string in array", `{"resourceType":"Patient","name":[{"given":[""]}]}`, "Patient.name[0].given[0]", "value"},
		{"syntax error", `{"resourceType":"Patient",}`, "Patient", "structure"},
		{"duplicate and empty at once", `{"resourceType":"Patient","gender":"male","gender":""}`, "Patient.gender", "value"},
	}
	v := newTestValidator(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, issues := v.Validate(context.Background(), []byte(tt.body))
			if !findIssue(issues, tt.expression, tt.code) {
				t.Errorf("want a %s error at %q, got:%s", tt.code, tt.expression, formatIssues(issues))
			}
		})
	}

	t.Run("depth within limit", func(t *testing.T) {
		_, issues := v.Validate(context.Background(), []byte(deep(20)))
		if HasErrors(issues) {
			t.Errorf("rejected:%s", formatIssues(issues))
		}
	})
	t.Run("size over limit", func(t *testing.T) {
		body := append([]byte(`{"resourceType":"Basic","code":{"text":"`), bytes.Repeat([]byte("a"), DefaultMaxBytes)...)
		body = append(body, `"}}`...)
		_, issues := v.Validate(context.Background(), body)
		if !findIssue(issues, "", "too-costly") {
			t.Errorf("want a too-costly error, got:%s", formatIssues(issues))
		}
	})
}

type syntheaBundle struct {
	Entry []struct {
		Resource json.RawMessage `json:"resource"`
	} `json:"entry"`
}

func TestSyntheaBundles(t *testing.T) {
	v := newTestValidator(t)
	files, _ := filepath.Glob("testdata/synthea/*.json")
	if len(files) < 2 {
		t.Fatalf("expected Synthea bundles under testdata/synthea, found %d", len(files))
	}
	for _, f := range files {
		body := readFile(t, f)
		t.Run(filepath.Base(f), func(t *testing.T) {
			parsed, issues := v.Validate(context.Background(), body)
			if HasErrors(issues) {
				t.Fatalf("bundle rejected:%s", formatIssues(issues))
			}
			if parsed.Type != "Bundle" {
				t.Fatalf("type %q, want Bundle", parsed.Type)
			}
			var b syntheaBundle
			if err := json.Unmarshal(body, &b); err != nil {
				t.Fatalf("decoding bundle: %v", err)
			}
			if len(b.Entry) == 0 {
				t.Fatal("bundle has no entries")
			}
			for i, e := range b.Entry {
				if _, issues := v.Validate(context.Background(), e.Resource); HasErrors(issues) {
					t.Errorf("entry %d rejected on its own:%s", i, formatIssues(issues))
				}
			}
		})
	}
}

func TestResourceTypesMatchSchema(t *testing.T) {
	var doc struct {
		Discriminator struct {
			Mapping map[string]string `json:"mapping"`
		} `json:"discriminator"`
	}
	if err := json.Unmarshal(fhirSchema, &doc); err != nil {
		t.Fatalf("decoding embedded schema: %v", err)
	}
	var fromSchema []string
	for name := range doc.Discriminator.Mapping {
		fromSchema = append(fromSchema, name)
	}
	sort.Strings(fromSchema)
	got := ResourceTypes()
	if len(got) != 146 || strings.Join(got, ",") != strings.Join(fromSchema, ",") {
		t.Errorf("ResourceTypes() (%d) differs from the schema's discriminator mapping (%d)", len(got), len(fromSchema))
	}
	got[0] = "Mutated"
	if ResourceTypes()[0] == "Mutated" {
		t.Error("ResourceTypes() returned shared storage")
	}
}

func TestIsResourceType(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"Observation", true}, {"Account", true}, {"VisionPrescription", true}, {"Parameters", true},
		{"observation", false}, {"Resource", false}, {"DomainResource", false}, {"Quantity", false},
		{"", false}, {"Zzz", false}, {"Observation ", false},
	}
	for _, tt := range tests {
		if got := IsResourceType(tt.name); got != tt.want {
			t.Errorf("IsResourceType(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestConcurrentValidation(t *testing.T) {
	v := newTestValidator(t)
	bodies := [][]byte{
		readFile(t, "testdata/valid/observation-pain.json"),
		readFile(t, "testdata/examples/Patient-example.json"),
		readFile(t, "testdata/broken/missing-status.json"),
	}
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			body := bodies[g%len(bodies)]
			_, issues := v.Validate(context.Background(), body)
			if want := g%len(bodies) == 2; HasErrors(issues) != want {
				errs <- fmt.Sprintf("goroutine %d: HasErrors = %v, want %v", g, !want, want)
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestCancelledContext(t *testing.T) {
	v := newTestValidator(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, issues := v.Validate(ctx, readFile(t, "testdata/valid/observation-pain.json"))
	if !findIssue(issues, "", "timeout") {
		t.Errorf("want a timeout issue for a cancelled context, got:%s", formatIssues(issues))
	}
}

func TestHasErrors(t *testing.T) {
	tests := []struct {
		issues []Issue
		want   bool
	}{
		{nil, false},
		{[]Issue{{Severity: "warning"}, {Severity: "information"}}, false},
		{[]Issue{{Severity: "warning"}, {Severity: "error"}}, true},
		{[]Issue{{Severity: "fatal"}}, true},
	}
	for i, tt := range tests {
		if got := HasErrors(tt.issues); got != tt.want {
			t.Errorf("case %d: HasErrors = %v, want %v", i, got, tt.want)
		}
	}
}

// TestInvalidUTF8InNames: an element name with invalid UTF-8 is named in
// the issues as the decoder reads it (U+FFFD), once, whichever pass finds it.
func TestInvalidUTF8InNames(t *testing.T) {
	v := newTestValidator(t)
	body := "{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"},\"valueQuantity\":{\"\xf5\":\"0\"}}"
	_, issues := v.Validate(context.Background(), []byte(body))
	n := 0
	for _, is := range issues {
		if !utf8.ValidString(is.Expression) || !utf8.ValidString(is.Diagnostics) {
			t.Errorf("issue with invalid UTF-8: %+v", is)
		}
		if is.Expression == "Observation.valueQuantity.\uFFFD" {
			n++
		}
	}
	if n != 1 || !findIssue(issues, "Observation.valueQuantity.\uFFFD", "structure") {
		t.Errorf("want one structure error at Observation.valueQuantity.\\uFFFD, got:%s", formatIssues(issues))
	}
}
