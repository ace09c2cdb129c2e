package resources

import (
	"errors"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

func TestIndexToken(t *testing.T) {
	p := param("t", storage.KindToken)
	cc := map[string]any{"coding": []any{
		map[string]any{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
		map[string]any{"system": "http://snomed.info/sct", "code": "364075005"},
	}, "text": "Pulse"}
	ident := map[string]any{"system": "urn:oid:1.2.36", "value": "12345",
		"type": map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}}, "text": "Medical record"}}
	tests := []struct {
		name string
		n    node
		want []storage.Entry
	}{
		{"code", node{"final", "code"}, []storage.Entry{{Param: "t", Kind: storage.KindToken, Code: "final"}}},
		{"boolean", node{true, "boolean"}, []storage.Entry{{Param: "t", Kind: storage.KindToken, Code: "true"}}},
		{"Coding", node{map[string]any{"system": "s", "code": "c", "display": "Déjà Vu"}, "Coding"},
			[]storage.Entry{{Param: "t", Kind: storage.KindToken, System: "s", Code: "c", Text: "deja vu"}}},
		{"CodeableConcept", node{cc, "CodeableConcept"}, []storage.Entry{
			{Param: "t", Kind: storage.KindToken, System: "http://loinc.org", Code: "8867-4", Text: "heart rate"},
			{Param: "t", Kind: storage.KindToken, System: "http://snomed.info/sct", Code: "364075005"},
			{Param: "t", Kind: storage.KindToken, Text: "pulse"},
		}},
		{"Identifier", node{ident, "Identifier"}, []storage.Entry{
			{Param: "t", Kind: storage.KindToken, System: "urn:oid:1.2.36", Code: "12345", Text: "medical record"},
			{Param: "t:of-type", Kind: storage.KindToken, System: "http://terminology.hl7.org/CodeSystem/v2-0203", Code: "MR|12345"},
		}},
		{"ContactPoint", node{map[string]any{"system": "phone", "value": "555-1234"}, "ContactPoint"},
			[]storage.Entry{{Param: "t", Kind: storage.KindToken, Code: "555-1234"}}},
		{"empty", node{"", "code"}, nil},
		{"number is not a token", node{3.5, "decimal"}, nil},
	}
	for _, tt := range tests {
		got := indexToken(p, tt.n)
		if len(got) != len(tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
			continue
		}
		for i := range got {
			if got[i].Param != tt.want[i].Param || got[i].System != tt.want[i].System || got[i].Code != tt.want[i].Code || got[i].Text != tt.want[i].Text {
				t.Errorf("%s[%d]: got %+v, want %+v", tt.name, i, got[i], tt.want[i])
			}
		}
	}
}

func TestCompileTokenSemantics(t *testing.T) {
	r := registry(t)
	p := param("code", storage.KindToken)
	loinc := indexToken(p, node{map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}}}, "CodeableConcept"})
	noSystem := indexToken(p, node{"8867-4", "code"})
	tests := []struct {
		mod, value   string
		loinc, nosys bool
	}{
		{"", "8867-4", true, true},
		{"", "http://loinc.org|8867-4", true, false},
		{"", "|8867-4", false, true},
		{"", "http://loinc.org|", true, false},
		{"", "http://snomed.info/sct|8867-4", false, false},
		{"", "1234,8867-4", true, true},
		{"not", "http://loinc.org|8867-4", false, true},
		{"not", "8867-4", false, false},
		{"text", "heart", true, false},
		{"text", "rate", false, false},
	}
	for _, tt := range tests {
		e := compileOne(t, r, "Observation", "code", tt.mod, tt.value)
		if got := matches(t, e, loinc); got != tt.loinc {
			t.Errorf("code:%s=%s on loinc = %v, want %v (%s)", tt.mod, tt.value, got, tt.loinc, e)
		}
		if got := matches(t, e, noSystem); got != tt.nosys {
			t.Errorf("code:%s=%s on bare code = %v, want %v (%s)", tt.mod, tt.value, got, tt.nosys, e)
		}
	}
	// :not also selects resources without any value.
	if !matches(t, compileOne(t, r, "Observation", "code", "not", "8867-4"), nil) {
		t.Error("code:not should match a resource without codes")
	}
}

func TestCompileOfType(t *testing.T) {
	r := registry(t)
	ident := map[string]any{"system": "urn:oid:1.2.36", "value": "12345",
		"type": map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}}}}
	entries := indexToken(param("identifier", storage.KindToken), node{ident, "Identifier"})
	tests := []struct {
		value string
		want  bool
	}{
		{"http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345", true},
		{"|MR|12345", true},
		{"http://terminology.hl7.org/CodeSystem/v2-0203|MR|999", false},
		{"http://terminology.hl7.org/CodeSystem/v2-0203|DL|12345", false},
	}
	for _, tt := range tests {
		e := compileOne(t, r, "Patient", "identifier", "of-type", tt.value)
		if got := matches(t, e, entries); got != tt.want {
			t.Errorf("identifier:of-type=%s = %v, want %v (%s)", tt.value, got, tt.want, e)
		}
	}
	// The of-type companion entries must not answer ordinary searches.
	if matches(t, compileOne(t, r, "Patient", "identifier", "", "http://terminology.hl7.org/CodeSystem/v2-0203|MR"), entries) ||
		matches(t, compileOne(t, r, "Patient", "identifier", "", "MR|12345"), entries) {
		t.Error("ordinary identifier search matched an of-type entry")
	}
	if _, err := r.Compile("Patient", "identifier", "of-type", []string{"MR|12345"}); !errors.Is(err, ErrInvalidValue) {
		t.Errorf("two-part :of-type error = %v", err)
	}
}

func TestTokenIn(t *testing.T) {
	r := registry(t)
	_, err := r.Compile("Observation", "code", "not-in", []string{"http://example.org/vs1,http://example.org/vs2"})
	var vse *ValueSetError
	if !errors.As(err, &vse) || !vse.Not || vse.Param != "code" || len(vse.ValueSets) != 2 || vse.ValueSets[1] != "http://example.org/vs2" {
		t.Fatalf("Compile :not-in error = %#v", err)
	}
	entries := indexToken(param("code", storage.KindToken), node{map[string]any{"system": "http://loinc.org", "code": "8867-4"}, "Coding"})
	codes := []Coding{{"http://loinc.org", "1234-5"}, {"http://loinc.org", "8867-4"}}
	in, err := r.TokenIn("Observation", "code", codes, false)
	if err != nil {
		t.Fatal(err)
	}
	notIn, err := r.TokenIn("Observation", "code", codes, true)
	if err != nil {
		t.Fatal(err)
	}
	if !matches(t, in, entries) || matches(t, notIn, entries) {
		t.Errorf("TokenIn: in=%s notIn=%s", in, notIn)
	}
	other, _ := r.TokenIn("Observation", "code", codes[:1], false)
	if matches(t, other, entries) {
		t.Error("TokenIn matched a code outside the expansion")
	}
	if _, err := r.TokenIn("Observation", "subject", codes, false); !errors.Is(err, ErrInvalidValue) {
		t.Errorf("TokenIn on a reference: %v", err)
	}
}
