package fhir_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestSearchQuantityUnits pins the two meanings of a quantity search over
// HTTP on every backend: without a unit the number compares with the value
// as written; with a convertible UCUM unit both sides compare in canonical
// units. 150 mm[Hg] is 19998.36 Pa (19.998 kPa), so it is not above 160
// but is below 20 kPa and above 19.99 kPa.
func TestSearchQuantityUnits(t *testing.T) {
	const (
		bp = `{"resourceType":"Observation","id":"bp","status":"final",
			"code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},
			"component":[
				{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},
				 "valueQuantity":{"value":150,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}},
				{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},
				 "valueQuantity":{"value":90,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]}`
		sys = `{"resourceType":"Observation","id":"sys","status":"final",
			"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},
			"valueQuantity":{"value":150,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}`
		kpa = "|http://unitsofmeasure.org|kPa"
	)
	tests := []struct {
		param, value string
		want         string
	}{
		{"component-code-value-quantity", "http://loinc.org|8480-6$gt160", ""},
		{"component-code-value-quantity", "http://loinc.org|8480-6$gt140", "Observation/bp"},
		{"component-code-value-quantity", "http://loinc.org|8480-6$lt20" + kpa, "Observation/bp"},
		{"component-code-value-quantity", "http://loinc.org|8480-6$lt19.99" + kpa, ""},
		{"component-code-value-quantity", "http://loinc.org|8462-4$gt140", ""},
		{"value-quantity", "gt160", ""},
		{"value-quantity", "gt140", "Observation/sys"},
		{"value-quantity", "150", "Observation/sys"},
		{"value-quantity", "lt20" + kpa, "Observation/sys"},
		{"value-quantity", "gt19.99" + kpa, "Observation/sys"},
		{"value-quantity", "gt20" + kpa, ""},
		{"value-quantity", "gt150||mm[Hg]", ""},
		{"value-quantity", "ge150||mm[Hg]", "Observation/sys"},
	}
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			c.do("PUT", "/Observation/bp", bp).expect(t, http.StatusCreated)
			c.do("PUT", "/Observation/sys", sys).expect(t, http.StatusCreated)
			for _, tc := range tests {
				got := strings.Join(c.search(t, "/Observation?"+tc.param+"="+url.QueryEscape(tc.value)), ",")
				if got != tc.want {
					t.Errorf("%s=%s matched %q, want %q", tc.param, tc.value, got, tc.want)
				}
			}
		})
	}
}
