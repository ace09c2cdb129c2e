package profile

import (
	"strings"
	"testing"
)

// TestReferenceTargets: a reference's type, from its literal, its type
// element or the local resource it resolves to, must be one its element
// allows; a target profile that is a profile is checked on a local target.
func TestReferenceTargets(t *testing.T) {
	r, err := New()
	if err != nil {
		t.Fatal(err)
	}
	const (
		base     = "http://example.org/fhir/StructureDefinition/"
		adult    = base + "patient-with-birthdate"
		obsByDoc = base + "observation-by-practitioner"
	)
	addProfile(t, r, adult, "Patient", el("Patient.birthDate", "min", json1(1)))
	addProfile(t, r, obsByDoc, "Observation",
		el("Observation.subject", "min", json1(1), "type", []any{map[string]any{"code": "Reference", "targetProfile": []any{adult}}}),
		el("Observation.performer", "type", []any{map[string]any{"code": "Reference", "targetProfile": []any{"http://hl7.org/fhir/StructureDefinition/Practitioner"}}}),
	)
	// Core R4: Patient.generalPractitioner is Organization | Practitioner | PractitionerRole.
	gp := func(ref string) string {
		return `{"resourceType":"Patient","generalPractitioner":[` + ref + `]}`
	}
	t.Run("core", func(t *testing.T) {
		for _, tc := range []struct{ name, json, want string }{
			{"practitioner", gp(`{"reference":"Practitioner/1"}`), ""},
			{"patient", gp(`{"reference":"Patient/1"}`), `the reference "Patient/1" is to a Patient, where only Organization or Practitioner or PractitionerRole is allowed`},
			{"absolute URL to a patient", gp(`{"reference":"https://other.example/fhir/Patient/1/_history/2"}`), "is to a Patient, where only"},
			{"type element only", gp(`{"type":"Patient","identifier":{"value":"1"}}`), "is to a Patient, where only"},
			{"type element disagrees", gp(`{"reference":"Practitioner/1","type":"Organization"}`), "its type says Organization"},
			{"contained patient", `{"resourceType":"Patient","contained":[{"resourceType":"Patient","id":"p"}],"generalPractitioner":[{"reference":"#p"}],"link":[{"other":{"reference":"#p"},"type":"seealso"}]}`, `the reference "#p" is to a Patient, where only`},
		} {
			res, err := decode([]byte(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			text := issuesText(errorsOf(r.Validate(bg, res, Options{})))
			switch {
			case tc.want == "" && text != "":
				t.Errorf("%s: unexpected:%s", tc.name, text)
			case tc.want != "" && !strings.Contains(text, tc.want):
				t.Errorf("%s: want %q, got:%s", tc.name, tc.want, text)
			}
		}
	})
	obs := func(subject, extra string) string {
		return `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"` + subject + `"}` + extra + `}`
	}
	withPatient := func(birthDate bool) string {
		p := `{"resourceType":"Patient","id":"p"`
		if birthDate {
			p += `,"birthDate":"1970-01-01"`
		}
		return `,"contained":[` + p + `}]`
	}
	t.Run("profile", func(t *testing.T) {
		checkCases(t, r, obsByDoc, []struct{ name, json, want string }{
			{"remote patient: its profile is not known here", obs("Patient/1", ""), ""},
			{"performer is a patient", obs("Patient/1", `,"performer":[{"reference":"Patient/2"}]`), "where only Practitioner is allowed"},
			{"performer is a practitioner", obs("Patient/1", `,"performer":[{"reference":"Practitioner/2"}]`), ""},
			{"subject a group", obs("Group/1", ""), "where only Patient is allowed"},
			{"contained patient meets the target profile", obs("#p", withPatient(true)), ""},
			{"contained patient without birthDate", obs("#p", withPatient(false)), `the reference "#p" is to a Patient that does not conform to ` + adult},
		})
	})
	bundle := func(entries ...string) string {
		return `{"resourceType":"Bundle","type":"collection","entry":[` + strings.Join(entries, ",") + `]}`
	}
	entry := func(fullURL, res string) string {
		if fullURL == "" {
			return `{"resource":` + res + `}`
		}
		return `{"fullUrl":"` + fullURL + `","resource":` + res + `}`
	}
	claim := func(subject string) string {
		return `{"resourceType":"Observation","id":"o","meta":{"profile":["` + obsByDoc + `"]},"status":"final","code":{"text":"x"},"subject":{"reference":"` + subject + `"}}`
	}
	patient := func(birthDate bool) string {
		if birthDate {
			return `{"resourceType":"Patient","id":"1","birthDate":"1970-01-01"}`
		}
		return `{"resourceType":"Patient","id":"1"}`
	}
	versioned := func(res, v string) string {
		return strings.Replace(res, `"id":"1"`, `"id":"1","meta":{"versionId":"`+v+`"}`, 1)
	}
	const uuid = "urn:uuid:8c0d7a5e-1f7e-4a8e-9d52-2b1b3c4d5e6f"
	t.Run("bundle", func(t *testing.T) {
		for _, tc := range []struct{ name, json, want string }{
			{"urn entry meets the profile", bundle(entry(uuid, patient(true)), entry("urn:uuid:00000000-0000-4000-8000-000000000001", claim(uuid))), ""},
			{"urn entry without birthDate", bundle(entry(uuid, patient(false)), entry("urn:uuid:00000000-0000-4000-8000-000000000001", claim(uuid))), "does not conform to " + adult},
			{"relative against a RESTful fullUrl", bundle(entry("https://ehr.example/fhir/Patient/1", patient(false)), entry("https://ehr.example/fhir/Observation/o", claim("Patient/1"))), `the reference "Patient/1" is to a Patient that does not conform`},
			{"relative from another server's base is not the entry", bundle(entry("https://ehr.example/fhir/Patient/1", patient(false)), entry("https://other.example/fhir/Observation/o", claim("Patient/1"))), ""},
			{"relative from a urn entry names a server resource", bundle(entry("https://ehr.example/fhir/Patient/1", patient(false)), entry("urn:uuid:00000000-0000-4000-8000-000000000001", claim("Patient/1"))), ""},
			{"entries without fullUrl, by type and id", bundle(entry("", patient(false)), entry("", claim("Patient/1"))), "does not conform to " + adult},
			{"versioned reference to a version the Bundle holds", bundle(entry("https://ehr.example/fhir/Patient/1", versioned(patient(false), "1")), entry("https://ehr.example/fhir/Patient/1", versioned(patient(true), "2")), entry("https://ehr.example/fhir/Observation/o", claim("Patient/1/_history/2"))), ""},
			{"versioned reference picks that version", bundle(entry("https://ehr.example/fhir/Patient/1", versioned(patient(false), "1")), entry("https://ehr.example/fhir/Patient/1", versioned(patient(true), "2")), entry("https://ehr.example/fhir/Observation/o", claim("Patient/1/_history/1"))), "does not conform to " + adult},
			{"versioned reference to a version the Bundle lacks", bundle(entry("https://ehr.example/fhir/Patient/1", versioned(patient(true), "1")), entry("https://ehr.example/fhir/Observation/o", claim("Patient/1/_history/3"))), "holds Patient/1 but not its version 3"},
			{"unversioned reference to two versions", bundle(entry("https://ehr.example/fhir/Patient/1", versioned(patient(true), "1")), entry("https://ehr.example/fhir/Patient/1", versioned(patient(true), "2")), entry("https://ehr.example/fhir/Observation/o", claim("Patient/1"))), "2 entries of the Bundle match"},
			{"a relative fullUrl", bundle(entry("Patient/1", patient(true))), "the fullUrl must be an absolute URL or a URN"},
			{"a RESTful fullUrl with another id", bundle(entry("https://ehr.example/fhir/Patient/2", patient(true))), "must end with the resource's type and id (Patient/1)"},
			{"a RESTful fullUrl with another type", bundle(entry("https://ehr.example/fhir/Group/1", patient(true))), "must end with the resource's type and id (Patient/1)"},
			{"a non-RESTful URL", bundle(entry("https://ehr.example/things/p-one", patient(true))), ""},
			{"the entry is not what the literal says", bundle(entry("https://ehr.example/fhir/Patient/1", `{"resourceType":"Group","id":"1","type":"person","actual":true}`), entry("https://ehr.example/fhir/Observation/o", claim("Patient/1"))), "resolves to a Group"},
		} {
			res, err := decode([]byte(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			text := issuesText(errorsOf(r.Validate(bg, res, Options{})))
			switch {
			case tc.want == "" && text != "":
				t.Errorf("%s: unexpected:%s", tc.name, text)
			case tc.want != "" && !strings.Contains(text, tc.want):
				t.Errorf("%s: want %q, got:%s", tc.name, tc.want, text)
			}
		}
		// A history Bundle holds several versions by design: an
		// unversioned reference is not ambiguous there.
		hist := func(res, method string) string {
			return `{"fullUrl":"https://ehr.example/fhir/Patient/1","resource":` + res + `,"request":{"method":"` + method + `","url":"Patient/1"},"response":{"status":"200"}}`
		}
		raw := `{"resourceType":"Bundle","type":"history","entry":[` + hist(versioned(patient(true), "2"), "PUT") + "," + hist(versioned(patient(true), "1"), "POST") +
			`,{"fullUrl":"https://ehr.example/fhir/Observation/o","resource":` + claim("Patient/1") + `,"request":{"method":"POST","url":"Observation"},"response":{"status":"201"}}]}`
		res, err := decode([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		if text := issuesText(errorsOf(r.Validate(bg, res, Options{}))); strings.Contains(text, "match the reference") {
			t.Errorf("history Bundle:%s", text)
		}
	})
}
