package profile

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestReferenceTargetsResolved: a target profile on a reference that is
// neither contained nor in the Bundle is checked on the target the
// Resolver finds; a target that cannot be found is a warning that the
// profile was not checked, never an error; a literal of a type the
// element does not allow stays an error.
func TestReferenceTargetsResolved(t *testing.T) {
	r, err := New()
	if err != nil {
		t.Fatal(err)
	}
	const (
		base  = "http://example.org/fhir/StructureDefinition/"
		adult = base + "patient-with-birthdate-r"
		named = base + "patient-with-name-r"
		obsBy = base + "observation-of-dated-patient"
		obs2  = base + "observation-of-dated-or-named-patient"
		here  = "https://anodyne.test/fhir/"
	)
	addProfile(t, r, adult, "Patient", el("Patient.birthDate", "min", json1(1)))
	addProfile(t, r, named, "Patient", el("Patient.name", "min", json1(1)))
	addProfile(t, r, obsBy, "Observation",
		el("Observation.subject", "type", []any{map[string]any{"code": "Reference", "targetProfile": []any{adult}}}))
	addProfile(t, r, obs2, "Observation",
		el("Observation.subject", "type", []any{map[string]any{"code": "Reference", "targetProfile": []any{adult, named}}}))

	// The store the resolver reads: Patient/dated has a birthDate (meets
	// adult), Patient/named only a name (meets named, not adult),
	// Patient/bare neither; Patient/1 at version 1 is bare, at 2 dated.
	store := map[string]string{
		"Patient/dated":          `{"resourceType":"Patient","id":"dated","birthDate":"1970-01-01"}`,
		"Patient/named":          `{"resourceType":"Patient","id":"named","name":[{"family":"Doe"}]}`,
		"Patient/bare":           `{"resourceType":"Patient","id":"bare","gender":"male"}`,
		"Patient/1/_history/1":   `{"resourceType":"Patient","id":"1","gender":"male"}`,
		"Patient/1/_history/2":   `{"resourceType":"Patient","id":"1","birthDate":"1980-02-02"}`,
		"Patient/misfiled-group": `{"resourceType":"Group","id":"misfiled-group","type":"person","actual":true}`,
	}
	var asked []string
	resolver := func(_ context.Context, ref string) (map[string]any, error) {
		asked = append(asked, ref)
		if ref == "Patient/broken" {
			return nil, errors.New("the store did not answer")
		}
		if isAbsolute(ref) {
			rel, ok := strings.CutPrefix(ref, here)
			if !ok {
				return nil, nil // another server's URL
			}
			ref = rel
		}
		raw, ok := store[ref]
		if !ok {
			return nil, nil
		}
		return decode([]byte(raw))
	}
	obs := func(profile, subject string) string {
		return `{"resourceType":"Observation","id":"o","meta":{"profile":["` + profile + `"]},"status":"final","code":{"text":"x"},"subject":{"reference":"` + subject + `"}}`
	}
	bundle := func(obsURL, subject string) string {
		return `{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"` + obsURL + `","resource":` + obs(obsBy, subject) + `}]}`
	}
	const notChecked = "could not be resolved"
	for _, tc := range []struct {
		name, json string
		noResolver bool
		wantErr    string // "" = no error issue
		wantWarn   string // "" = no warning about the target
		wantAsked  string // the reference the resolver must have been given ("" = not asked)
		at         string // the element the issue names
	}{
		{name: "stored target conforms", json: obs(obsBy, "Patient/dated"), wantAsked: "Patient/dated"},
		{name: "stored target does not conform", json: obs(obsBy, "Patient/named"), wantErr: `the reference "Patient/named" is to a Patient that does not conform to ` + adult + " (reference target profile; profile " + obsBy + ")", wantAsked: "Patient/named", at: "Observation.subject"},
		{name: "one of two target profiles is enough", json: obs(obs2, "Patient/named"), wantAsked: "Patient/named"},
		{name: "none of two target profiles", json: obs(obs2, "Patient/bare"), wantErr: "does not conform to " + adult + " or " + named, wantAsked: "Patient/bare", at: "Observation.subject"},
		{name: "absolute URL of this server", json: obs(obsBy, here+"Patient/named"), wantErr: "does not conform to " + adult, wantAsked: here + "Patient/named", at: "Observation.subject"},
		{name: "absolute URL of another server", json: obs(obsBy, "https://other.example/fhir/Patient/named"), wantWarn: notChecked, wantAsked: "https://other.example/fhir/Patient/named", at: "Observation.subject"},
		{name: "target not found", json: obs(obsBy, "Patient/nobody"), wantWarn: `the reference "Patient/nobody" could not be resolved (the target is not known here), so its conformance to ` + adult + " was not checked", wantAsked: "Patient/nobody", at: "Observation.subject"},
		{name: "resolver fails", json: obs(obsBy, "Patient/broken"), wantWarn: "the store did not answer", wantAsked: "Patient/broken", at: "Observation.subject"},
		{name: "no resolver", json: obs(obsBy, "Patient/named"), noResolver: true, wantWarn: "no resolver", at: "Observation.subject"},
		{name: "resolver finds another type", json: obs(obsBy, "Patient/misfiled-group"), wantWarn: "is a Group, not a Patient", wantAsked: "Patient/misfiled-group", at: "Observation.subject"},
		{name: "versioned reference: the conforming version", json: obs(obsBy, "Patient/1/_history/2"), wantAsked: "Patient/1/_history/2"},
		{name: "versioned reference: the other version", json: obs(obsBy, "Patient/1/_history/1"), wantErr: "does not conform to " + adult, wantAsked: "Patient/1/_history/1", at: "Observation.subject"},
		{name: "literal type not allowed stays an error", json: obs(obsBy, "Group/1"), wantErr: `the reference "Group/1" is to a Group, where only Patient is allowed`, at: "Observation.subject"},
		{name: "missing contained target is ref-1, not a lookup", json: obs(obsBy, "#nope"), wantErr: "invariant ref-1", at: "Observation.subject"},
		{name: "relative from a RESTful entry names that server", json: bundle("https://other.example/fhir/Observation/o", "Patient/named"), wantWarn: notChecked, wantAsked: "https://other.example/fhir/Patient/named", at: "Bundle.entry[0].resource.subject"},
		{name: "relative from this server's entry", json: bundle(here+"Observation/o", "Patient/named"), wantErr: "does not conform to " + adult, wantAsked: here + "Patient/named", at: "Bundle.entry[0].resource.subject"},
		{name: "relative from a urn entry is a server resource", json: bundle("urn:uuid:00000000-0000-4000-8000-000000000001", "Patient/named"), wantErr: "does not conform to " + adult, wantAsked: "Patient/named", at: "Bundle.entry[0].resource.subject"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := decode([]byte(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			asked = nil
			opts := Options{Resolve: resolver}
			if tc.noResolver {
				opts.Resolve = nil
			}
			issues := r.Validate(bg, res, opts)
			errs := errorsOf(issues)
			var warns []Issue
			for _, is := range issues {
				if is.Severity == "warning" && strings.Contains(is.Diagnostics, "reference target profile") {
					warns = append(warns, is)
				}
			}
			check := func(kind string, got []Issue, want string) {
				switch {
				case want == "" && len(got) > 0:
					t.Errorf("unexpected %s:%s", kind, issuesText(got))
				case want != "" && (len(got) != 1 || !strings.Contains(got[0].Diagnostics, want)):
					t.Errorf("want one %s containing %q, got:%s", kind, want, issuesText(got))
				case want != "" && tc.at != "" && got[0].Expression != tc.at:
					t.Errorf("%s names %s, want %s", kind, got[0].Expression, tc.at)
				}
			}
			check("error", errs, tc.wantErr)
			check("warning", warns, tc.wantWarn)
			switch {
			case tc.wantAsked == "" && len(asked) > 0:
				t.Errorf("resolver asked %v, want not asked", asked)
			case tc.wantAsked != "" && (len(asked) != 1 || asked[0] != tc.wantAsked):
				t.Errorf("resolver asked %v, want [%s]", asked, tc.wantAsked)
			}
		})
	}
}
