package auth

import (
	"errors"
	"testing"
)

func TestParseScope(t *testing.T) {
	tests := []struct {
		raw     string
		ctx     Context
		typ     string
		letters string
		v1      bool
		query   map[string]string
		wantErr bool
	}{
		{raw: "patient/Observation.read", ctx: ContextPatient, typ: "Observation", letters: "rs", v1: true},
		{raw: "user/*.*", ctx: ContextUser, typ: "*", letters: "cruds", v1: true},
		{raw: "system/*.write", ctx: ContextSystem, typ: "*", letters: "cud", v1: true},
		{raw: "patient/Observation.rs", ctx: ContextPatient, typ: "Observation", letters: "rs"},
		{raw: "user/Patient.cruds", ctx: ContextUser, typ: "Patient", letters: "cruds"},
		{raw: "system/Encounter.d", ctx: ContextSystem, typ: "Encounter", letters: "d"},
		{
			raw: "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs",
			ctx: ContextPatient, typ: "Observation", letters: "rs",
			query: map[string]string{"category": "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"},
		},
		{
			raw: "patient/Observation.rs?code=http%3A%2F%2Floinc.org%7C8867-4&status=final",
			ctx: ContextPatient, typ: "Observation", letters: "rs",
			query: map[string]string{"code": "http://loinc.org|8867-4", "status": "final"},
		},
		{raw: "patient/Observation.sr", wantErr: true},    // out of order
		{raw: "patient/Observation.rrs", wantErr: true},   // repeated
		{raw: "patient/Observation.readx", wantErr: true}, // unknown suffix
		{raw: "patient/Observation.", wantErr: true},
		{raw: "patient/Observation", wantErr: true},
		{raw: "doctor/Observation.rs", wantErr: true},
		{raw: "patient/observation.rs", wantErr: true},
		{raw: "patient/Observation.read?code=1", wantErr: true}, // v1 cannot be query-limited
		{raw: "patient/Observation.rs?", wantErr: true},
		{raw: "patient/Observation.rs?code", wantErr: true},
		{raw: "patient/Observation.rs?code=%zz", wantErr: true},
		{raw: "openid", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			s, err := ParseScope(tt.raw)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformedScope) {
					t.Fatalf("ParseScope(%q) error = %v, want ErrMalformedScope", tt.raw, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseScope(%q): %v", tt.raw, err)
			}
			if s.Context != tt.ctx || s.Type != tt.typ || s.Letters != tt.letters || s.V1 != tt.v1 || s.Raw != tt.raw {
				t.Errorf("ParseScope(%q) = %+v", tt.raw, s)
			}
			if len(s.Query) != len(tt.query) {
				t.Fatalf("query = %v, want %v", s.Query, tt.query)
			}
			for k, v := range tt.query {
				if got := s.Query.Get(k); got != v {
					t.Errorf("query %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestParseScopes(t *testing.T) {
	in := "openid fhirUser launch/patient patient/Observation.rs patient/Condition.sr offline_access system/Foo.bar"
	s := ParseScopes(in)
	if len(s.Resource) != 1 || s.Resource[0].Raw != "patient/Observation.rs" {
		t.Errorf("Resource = %+v", s.Resource)
	}
	if len(s.Malformed) != 2 {
		t.Errorf("Malformed = %v, want the two malformed scopes", s.Malformed)
	}
	for _, o := range []string{"openid", "fhirUser", "launch/patient", "offline_access"} {
		if !s.Has(o) {
			t.Errorf("Has(%q) = false", o)
		}
	}
	if got := s.String(); got != "openid fhirUser launch/patient offline_access patient/Observation.rs" {
		t.Errorf("String() = %q", got)
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		allowed, requested string
		want               bool
	}{
		{"patient/*.rs", "patient/Observation.rs", true},
		{"patient/*.rs", "patient/Observation.r", true},
		{"patient/*.rs", "patient/Observation.read", true},
		{"patient/*.read", "patient/Observation.rs?category=x|y", true},
		{"patient/*.rs", "patient/Observation.c", false},
		{"patient/*.rs", "user/Observation.rs", false},
		{"patient/Condition.rs", "patient/Observation.rs", false},
		{"patient/Observation.rs?category=a|b", "patient/Observation.rs", false},
		{"patient/Observation.rs?category=a|b", "patient/Observation.rs?category=a|b", true},
		{"system/*.*", "system/Patient.cruds", true},
	}
	for _, tt := range tests {
		a, err := ParseScope(tt.allowed)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseScope(tt.requested)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.Covers(r); got != tt.want {
			t.Errorf("%s covers %s = %v, want %v", tt.allowed, tt.requested, got, tt.want)
		}
	}
}
