package resources

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

func TestLoadParams(t *testing.T) {
	r := registry(t)
	tests := []struct {
		typ, code string
		kind      storage.Kind
		expr      string
		targets   []string
	}{
		{"Observation", "code", storage.KindToken, "Observation.code", nil},
		{"Observation", "subject", storage.KindReference, "Observation.subject", nil},
		{"Observation", "value-quantity", storage.KindQuantity, "(Observation.value as Quantity) | (Observation.value as SampledData)", nil},
		{"Patient", "name", storage.KindString, "Patient.name", nil},
		{"Patient", "birthdate", storage.KindDate, "Patient.birthDate", nil},
		// Multi-base definitions keep only this type's part of the union.
		{"Observation", "patient", storage.KindReference, "Observation.subject.where(resolve() is Patient)", []string{"Group"}},
		{"Condition", "patient", storage.KindReference, "Condition.subject.where(resolve() is Patient)", nil},
		// Resource parameters apply to every type, rewritten to it.
		{"Patient", "_id", storage.KindToken, "Patient.id", nil},
		{"Binary", "_lastUpdated", storage.KindDate, "Binary.meta.lastUpdated", nil},
		{"Observation", "code-value-quantity", storage.KindComposite, "Observation", nil},
	}
	for _, tt := range tests {
		p, ok := r.Param(tt.typ, tt.code)
		if !ok {
			t.Errorf("Param(%s, %s) missing", tt.typ, tt.code)
			continue
		}
		if p.Type != tt.kind || p.Expression != tt.expr {
			t.Errorf("Param(%s, %s) = %s %q, want %s %q", tt.typ, tt.code, p.Type, p.Expression, tt.kind, tt.expr)
		}
		for _, target := range tt.targets {
			if !slices.Contains(p.Targets, target) {
				t.Errorf("Param(%s, %s).Targets = %v, want %s", tt.typ, tt.code, p.Targets, target)
			}
		}
	}
	if _, ok := r.Param("Patient", "nope"); ok {
		t.Error("Param(Patient, nope) found")
	}
	comp, _ := r.Param("Observation", "code-value-quantity")
	if len(comp.Components) != 2 || comp.Components[0].Type != storage.KindToken || comp.Components[1].Type != storage.KindQuantity {
		t.Errorf("code-value-quantity components = %+v", comp.Components)
	}
	if p, ok := r.ParamByURL("http://hl7.org/fhir/SearchParameter/clinical-patient"); !ok || len(p.Base) < 10 {
		t.Errorf("ParamByURL(clinical-patient) = %v, %v", p, ok)
	}
	if n := len(r.Params("Observation")); n < 30 {
		t.Errorf("Params(Observation) has %d params", n)
	}
	if u := r.Unsupported(); u["http://hl7.org/fhir/SearchParameter/DomainResource-text"] == "" {
		t.Errorf("_text should be recorded as unsupported, got %v", u)
	}
}

func TestCompartment(t *testing.T) {
	r := registry(t)
	tests := []struct {
		comp, typ string
		want      []string
	}{
		{"Patient", "Observation", []string{"subject", "performer"}},
		{"Patient", "Patient", []string{"link"}},
		{"Patient", "Organization", nil},
		{"Encounter", "Observation", []string{"encounter"}},
		{"Practitioner", "Encounter", []string{"practitioner", "participant"}},
		{"Nope", "Observation", nil},
	}
	for _, tt := range tests {
		if got := r.Compartment(tt.comp, tt.typ); !slices.Equal(got, tt.want) {
			t.Errorf("Compartment(%s, %s) = %v, want %v", tt.comp, tt.typ, got, tt.want)
		}
	}
	// Every compartment parameter must exist on its type, or compartment
	// search would silently find nothing.
	for _, comp := range []string{"Patient", "Encounter", "Practitioner", "RelatedPerson", "Device"} {
		for _, typ := range r.ResourceTypes() {
			for _, code := range r.Compartment(comp, typ) {
				if _, ok := r.Param(typ, code); !ok {
					t.Errorf("compartment %s: %s.%s is not a parameter", comp, typ, code)
				}
			}
		}
	}
}

func TestTypeExpression(t *testing.T) {
	tests := []struct{ expr, typ, want string }{
		{"Observation.code", "Observation", "Observation.code"},
		{"AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient)", "CarePlan", "CarePlan.subject.where(resolve() is Patient)"},
		{"AllergyIntolerance.patient | CarePlan.subject", "Patient", ""},
		{"(Observation.value as Quantity) | (Observation.value as SampledData)", "Observation", "(Observation.value as Quantity) | (Observation.value as SampledData)"},
		{"Resource.meta.tag", "Patient", "Patient.meta.tag"},
		{"extension.where(url='http://x|y').value", "Patient", "extension.where(url='http://x|y').value"},
	}
	for _, tt := range tests {
		if got := typeExpression(tt.expr, tt.typ); got != tt.want {
			t.Errorf("typeExpression(%q, %s) = %q, want %q", tt.expr, tt.typ, got, tt.want)
		}
	}
}

func customParam(code, base, typ, expr string) map[string]any {
	return map[string]any{
		"resourceType": "SearchParameter", "url": "http://example.org/sp/" + code, "code": code,
		"base": []any{base}, "type": typ, "expression": expr,
	}
}

func TestAdd(t *testing.T) {
	// A fresh registry: Add mutates it.
	r, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Add(customParam("mothers-maiden-name", "Patient", "string",
		"Patient.extension.where(url='http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName').value")); err != nil {
		t.Fatalf("Add: %v", err)
	}
	p, ok := r.Param("Patient", "mothers-maiden-name")
	if !ok || !p.Custom || p.Type != storage.KindString {
		t.Fatalf("custom param = %+v, %v", p, ok)
	}
	// A type first named by a custom parameter gets the Resource params too.
	if err := r.Add(customParam("flavour", "Basic", "token", "Basic.code")); err != nil {
		t.Fatalf("Add: %v", err)
	}
	if _, ok := r.Param("Basic", "_id"); !ok {
		t.Error("Basic lost _id")
	}

	bad := []struct {
		name string
		sp   map[string]any
		want error
	}{
		{"unparsable expression", customParam("x", "Patient", "string", "Patient.name.where("), ErrInvalidValue},
		{"missing code", customParam("", "Patient", "string", "Patient.name"), ErrInvalidValue},
		{"special type", customParam("y", "Patient", "special", "Patient.name"), ErrUnsupported},
		{"not a SearchParameter", map[string]any{"resourceType": "Patient"}, ErrInvalidValue},
		{"unknown component", map[string]any{"resourceType": "SearchParameter", "code": "c", "base": []any{"Patient"}, "type": "composite",
			"expression": "Patient", "component": []any{map[string]any{"definition": "http://nowhere", "expression": "name"}}}, ErrInvalidValue},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			wantErr(t, r.Add(tt.sp), tt.want)
		})
	}
	if _, ok := r.Param("Patient", "x"); ok {
		t.Error("a rejected parameter was registered")
	}
}

// TestConcurrentAdd runs Add against readers; run with -race.
func TestConcurrentAdd(t *testing.T) {
	r, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := r.Add(customParam(fmt.Sprintf("c%d", i), "Patient", "token", "Patient.gender")); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			_ = r.Params("Patient")
			if _, err := r.Compile("Patient", "gender", "", []string{"male"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i := range 4 {
		if _, ok := r.Param("Patient", fmt.Sprintf("c%d", i)); !ok {
			t.Errorf("c%d missing", i)
		}
	}
}

func TestLenientAs(t *testing.T) {
	tests := []struct{ in, want string }{
		{"(Observation.value as Quantity) | (Observation.component.value as SampledData)", "(Observation.value.ofType(Quantity)) | (Observation.component.value.ofType(SampledData))"},
		{"value.as(Quantity) | value.as(Range)", "value.ofType(Quantity) | value.ofType(Range)"},
		{"Observation.subject.where(resolve() is Patient)", "Observation.subject.where(resolve() is Patient)"},
		{"(Observation.value as CodeableConcept).text", "(Observation.value.ofType(CodeableConcept)).text"},
	}
	for _, tt := range tests {
		if got := lenientAs(tt.in); got != tt.want {
			t.Errorf("lenientAs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestPartitioning(t *testing.T) {
	p := registry(t).Partitioning()
	links := map[string]bool{}
	for _, l := range p.Links["Observation"] {
		links[fmt.Sprintf("%s/%v", l.Param, l.OnlyPatient)] = true
	}
	// Observation's patient compartment params in R4: subject, performer
	// (references of several target types) and patient (Patient only).
	for _, want := range []string{"subject/false", "performer/false", "patient/true"} {
		if !links[want] {
			t.Errorf("Observation links %v lack %s", p.Links["Observation"], want)
		}
	}
	if len(p.Links["Organization"]) != 0 {
		t.Errorf("Organization is in no patient compartment, got links %v", p.Links["Organization"])
	}
}
