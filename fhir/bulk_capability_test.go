package fhir_test

import (
	"net/http"
	"slices"
	"testing"
)

// TestBulkCapability checks that the route table declares the Bulk Data
// operations exactly when export is configured, at the levels the bulk
// data IG defines, and that the undeclared routes are still served.
func TestBulkCapability(t *testing.T) {
	const (
		sysDef     = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
		patientDef = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
		groupDef   = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"
		bulkIG     = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
	)
	b := backends()[0].open(t)
	on, _ := bulkServer(t, b, t.TempDir(), nil)
	off := newServer(t, b, nil)

	// ops lists name=definition of the operations on rest (resType "")
	// or on one resource entry.
	ops := func(cs map[string]any, resType string) []string {
		rest := get(cs, "rest", 0).(map[string]any)
		holder := rest
		if resType != "" {
			for _, r := range rest["resource"].([]any) {
				if r.(map[string]any)["type"] == resType {
					holder = r.(map[string]any)
				}
			}
		}
		var out []string
		list, _ := holder["operation"].([]any)
		for _, o := range list {
			m := o.(map[string]any)
			out = append(out, m["name"].(string)+"="+m["definition"].(string))
		}
		return out
	}
	tests := []struct {
		name       string
		c          *client
		enabled    bool
		kickOffGot int // status of a system kick-off
	}{
		{"export configured", on, true, http.StatusAccepted},
		{"no export directory", off, false, http.StatusNotImplemented},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := tc.c.do("GET", "/metadata", "").expect(t, http.StatusOK).json(t)
			checks := []struct {
				where, want string
			}{
				{"", "export=" + sysDef},
				{"Patient", "export=" + patientDef},
				{"Group", "export=" + groupDef},
			}
			for _, ck := range checks {
				if got := slices.Contains(ops(cs, ck.where), ck.want); got != tc.enabled {
					t.Errorf("operations of %q = %v, want %s declared: %v", ck.where, ops(cs, ck.where), ck.want, tc.enabled)
				}
			}
			// Observation has no export of its own.
			for _, o := range ops(cs, "Observation") {
				if o == "export="+patientDef || o == "export="+groupDef || o == "export="+sysDef {
					t.Errorf("Observation declares %s", o)
				}
			}
			inst, _ := cs["instantiates"].([]any)
			if slices.Contains(inst, any(bulkIG)) != tc.enabled {
				t.Errorf("instantiates = %v, want bulk-data: %v", inst, tc.enabled)
			}
			tc.c.do("GET", "/$export", "", asyncHdr...).expect(t, tc.kickOffGot)
			// Status routes are in the table too: unknown jobs are 404, not 405.
			tc.c.do("GET", "/$export-status/nope", "").expect(t, http.StatusNotFound)
			tc.c.do("GET", "/$export-file/nope/x.ndjson", "", "Accept: application/fhir+ndjson").expect(t, http.StatusNotFound)
		})
	}
}

// TestBaseTrailingSlash checks that GET [base]/ is the system search, as
// GET [base] is.
func TestBaseTrailingSlash(t *testing.T) {
	c := newServer(t, backends()[0].open(t), nil)
	c.do("PUT", "/Patient/p1", `{"resourceType":"Patient","id":"p1"}`, "Content-Type: application/fhir+json").expect(t, http.StatusCreated)
	for _, path := range []string{"?_type=Patient", "/?_type=Patient"} {
		got := c.do("GET", path, "").expect(t, http.StatusOK).json(t)
		if got["resourceType"] != "Bundle" || get(got, "type") != "searchset" || len(entryList(got["entry"])) != 1 {
			t.Errorf("GET [base]%s = %v, want a searchset with Patient/p1", path, got)
		}
	}
}
