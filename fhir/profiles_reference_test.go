package fhir_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/fhir"
)

// TestValidateReferenceTargetProfile: $validate (and a write claiming
// the profile) against a profile whose
// subject must conform to a Patient profile checks the stored Patient the
// subject names: one that meets the Patient profile passes, one that does
// not is an error naming the element and the profile, and one that is not
// stored (or is on another server) is a warning that it was not checked.
func TestValidateReferenceTargetProfile(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			be := b.open(t)
			c, _ := startServer(t, be, withProfiles(t))
			const (
				patURL = "http://example.org/fhir/StructureDefinition/e2e-dated-patient"
				obsURL = "http://example.org/fhir/StructureDefinition/e2e-obs-of-dated-patient"
			)
			c.do("POST", "/StructureDefinition", `{"resourceType":"StructureDefinition","url":"`+patURL+`","name":"DatedPatient","status":"active","kind":"resource","abstract":false,"type":"Patient",
			  "baseDefinition":"http://hl7.org/fhir/StructureDefinition/Patient","derivation":"constraint","differential":{"element":[{"id":"Patient.birthDate","path":"Patient.birthDate","min":1}]}}`).expect(t, 201)
			c.do("POST", "/StructureDefinition", `{"resourceType":"StructureDefinition","url":"`+obsURL+`","name":"ObsOfDatedPatient","status":"active","kind":"resource","abstract":false,"type":"Observation",
			  "baseDefinition":"http://hl7.org/fhir/StructureDefinition/Observation","derivation":"constraint","differential":{"element":[{"id":"Observation.subject","path":"Observation.subject","min":1,
			  "type":[{"code":"Reference","targetProfile":["`+patURL+`"]}]}]}}`).expect(t, 201)
			c.do("PUT", "/Patient/dated", `{"resourceType":"Patient","id":"dated","birthDate":"1970-01-01"}`).expect(t, 201)
			c.do("PUT", "/Patient/undated", `{"resourceType":"Patient","id":"undated","gender":"female"}`).expect(t, 201)

			validate := func(c *client, subject string) map[string]any {
				obs := `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"` + subject + `"}}`
				return c.do("POST", "/Observation/$validate?profile="+url.QueryEscape(obsURL), obs).expect(t, 200).json(t)
			}
			// issues returns the diagnostics of the issues of one severity
			// about Observation.subject.
			issues := func(oo map[string]any, sev string) []string {
				var out []string
				list, _ := oo["issue"].([]any)
				for _, i := range list {
					m, _ := i.(map[string]any)
					expr, _ := m["expression"].([]any)
					if m["severity"] == sev && len(expr) == 1 && expr[0] == "Observation.subject" {
						d, _ := m["diagnostics"].(string)
						out = append(out, d)
					}
				}
				return out
			}
			// A caller acting for Patient/dated (real SMART policy) may not
			// read Patient/undated: its target is not found, not judged.
			_, reg := parts(t)
			pr := &auth.Principal{Patient: "dated", Scopes: auth.ParseScopes("patient/*.*")}
			restricted, _ := startServer(t, be, func(cfg *fhir.Config) {
				withProfiles(t)(cfg)
				cfg.Authorizer = policy{auth.NewPolicy(reg)}
				cfg.Middleware = withPrincipal(pr)
			})
			for _, tc := range []struct {
				c                                *client
				name, subject, wantErr, wantWarn string
			}{
				{restricted, "restricted caller, own record", "Patient/dated", "", ""},
				{restricted, "restricted caller, another patient", "Patient/undated", "", "was not checked"},
				{c, "stored target conforms", "Patient/dated", "", ""},
				{c, "stored target conforms, by this server's URL", c.base + "/Patient/dated", "", ""},
				{c, "stored target does not conform", "Patient/undated", `the reference "Patient/undated" is to a Patient that does not conform to ` + patURL, ""},
				{c, "not stored", "Patient/nobody", "", "was not checked"},
				{c, "another server", "https://other.example/fhir/Patient/dated", "", "was not checked"},
			} {
				oo := validate(tc.c, tc.subject)
				errs, warns := issues(oo, "error"), issues(oo, "warning")
				for _, pair := range []struct {
					kind      string
					got       []string
					want, why string
				}{{"error", errs, tc.wantErr, obsURL}, {"warning", warns, tc.wantWarn, patURL}} {
					switch {
					case pair.want == "" && len(pair.got) > 0:
						t.Errorf("%s: unexpected %s: %v", tc.name, pair.kind, pair.got)
					case pair.want != "" && (len(pair.got) != 1 || !strings.Contains(pair.got[0], pair.want) || !strings.Contains(pair.got[0], pair.why) || !strings.Contains(pair.got[0], "reference target profile")):
						t.Errorf("%s: want one %s with %q naming %s and the rule, got %v", tc.name, pair.kind, pair.want, pair.why, pair.got)
					}
				}
			}

			// A write claiming the profile is held to the same rule: a stored
			// subject that does not conform refuses it, one that is not
			// stored is only a warning.
			write := func(subject string, want int) {
				t.Helper()
				obs := `{"resourceType":"Observation","meta":{"profile":["` + obsURL + `"]},"status":"final","code":{"text":"x"},"subject":{"reference":"` + subject + `"}}`
				c.do("POST", "/Observation", obs).expect(t, want)
			}
			write("Patient/dated", 201)
			write("Patient/undated", 422)
			write("Patient/nobody", 201)
		})
	}
}
