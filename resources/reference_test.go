package resources

import (
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

func TestIndexReference(t *testing.T) {
	r := registry(t)
	p := param("subject", storage.KindReference)
	tests := []struct {
		name string
		v    any
		want []storage.Entry
	}{
		{"relative", map[string]any{"reference": "Patient/123"}, []storage.Entry{{RefType: "Patient", RefID: "123"}}},
		{"versioned", map[string]any{"reference": "Patient/123/_history/4"}, []storage.Entry{{RefType: "Patient", RefID: "123"}}},
		{"our base", map[string]any{"reference": "https://fhir.example.org/r4/Patient/123"}, []storage.Entry{{RefType: "Patient", RefID: "123"}}},
		{"other server", map[string]any{"reference": "http://other.org/fhir/Patient/9"}, []storage.Entry{{RefURL: "http://other.org/fhir/Patient/9"}}},
		{"urn", map[string]any{"reference": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"}, []storage.Entry{{RefURL: "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"}}},
		{"contained", map[string]any{"reference": "#p1"}, nil},
		{"identifier", map[string]any{"identifier": map[string]any{"system": "http://ns", "value": "42"}, "display": "x"},
			[]storage.Entry{{System: "http://ns", Code: "42"}}},
		{"canonical", "http://hl7.org/fhir/Questionnaire/phq9|1.0", []storage.Entry{{RefURL: "http://hl7.org/fhir/Questionnaire/phq9"}}},
		{"display only", map[string]any{"display": "Dr X"}, nil},
	}
	for _, tt := range tests {
		got := r.indexReference(p, node{tt.v, "Reference"})
		if len(got) != len(tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
			continue
		}
		for i, w := range tt.want {
			g := got[i]
			if g.Kind != storage.KindReference || g.Param != "subject" || g.RefType != w.RefType || g.RefID != w.RefID || g.RefURL != w.RefURL || g.System != w.System || g.Code != w.Code {
				t.Errorf("%s[%d]: got %+v, want %+v", tt.name, i, g, w)
			}
		}
	}
}

func TestCompileReferenceSemantics(t *testing.T) {
	r := registry(t)
	p := param("subject", storage.KindReference)
	patient := r.indexReference(p, node{map[string]any{"reference": "Patient/123", "identifier": map[string]any{"system": "http://ns", "value": "42"}}, "Reference"})
	group := r.indexReference(p, node{map[string]any{"reference": "Group/123"}, "Reference"})
	remote := r.indexReference(p, node{map[string]any{"reference": "http://other.org/fhir/Patient/9"}, "Reference"})
	tests := []struct {
		mod, value             string
		patient, group, remote bool
	}{
		{"", "123", true, true, false},
		{"", "Patient/123", true, false, false},
		{"", "https://fhir.example.org/r4/Patient/123", true, false, false},
		{"Patient", "123", true, false, false},
		{"Group", "123", false, true, false},
		{"", "http://other.org/fhir/Patient/9", false, false, true},
		{"", "Patient/999,Group/123", false, true, false},
		{"identifier", "http://ns|42", true, false, false},
		{"identifier", "42", true, false, false},
		{"identifier", "http://other|42", false, false, false},
	}
	for _, tt := range tests {
		e := compileOne(t, r, "Observation", "subject", tt.mod, tt.value)
		for _, c := range []struct {
			name    string
			entries []storage.Entry
			want    bool
		}{{"patient", patient, tt.patient}, {"group", group, tt.group}, {"remote", remote, tt.remote}} {
			if got := matches(t, e, c.entries); got != c.want {
				t.Errorf("subject:%s=%s on %s = %v, want %v (%s)", tt.mod, tt.value, c.name, got, c.want, e)
			}
		}
	}
}
