package smart

import "testing"

func TestScopeSubset(t *testing.T) {
	const granted = "launch/patient offline_access openid patient/*.rs patient/Condition.read user/Observation.rs?category=vital-signs"
	cases := []struct {
		requested string
		want      bool
	}{
		{"patient/Observation.rs", true},
		{"patient/Observation.r", true},
		{"patient/Observation.read", true}, // v1 read = rs
		{"patient/Condition.rs", true},
		{"patient/*.rs launch/patient offline_access", true},
		{"patient/Observation.rs?code=1234-5", true}, // narrower query
		{"user/Observation.rs?category=vital-signs", true},
		{"patient/Observation.cruds", false},
		{"patient/Observation.write", false},
		{"patient/*.read patient/Patient.u", false},
		{"user/Observation.rs", false},               // wider than the query-limited grant
		{"user/Observation.rs?category=labs", false}, // different query
		{"system/Observation.rs", false},
		{"fhirUser", false},
		{"patient/Observation.sr", false}, // malformed letters grant nothing
		{"", true},
	}
	for _, tc := range cases {
		if got := scopeSubset(tc.requested, granted); got != tc.want {
			t.Errorf("scopeSubset(%q) = %v, want %v", tc.requested, got, tc.want)
		}
	}
}
