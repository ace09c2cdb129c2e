package fhir_test

import (
	"context"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/anodyne-fhir/anodyne/conformance/profile"
	"github.com/anodyne-fhir/anodyne/fhir"
)

// One profile registry for the test binary: loading it takes most of a second.
var testProfiles = sync.OnceValues(func() (*profile.Registry, error) { return profile.New() })

func withProfiles(t testing.TB) func(*fhir.Config) {
	t.Helper()
	r, err := testProfiles()
	if err != nil {
		t.Fatalf("profile.New: %v", err)
	}
	return func(c *fhir.Config) { c.Profiles = r }
}

func fixture(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile("../conformance/profile/testdata/valid/" + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestProfilesEndToEnd drives profile validation over real HTTP on every
// backend: publication, writes claiming profiles, unknown profiles, core
// invariants, $validate?profile=, and a user's StructureDefinition.
func TestProfilesEndToEnd(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			c, srv := startServer(t, b.open(t), withProfiles(t))
			ctx := context.Background()
			if err := srv.PublishProfiles(ctx); err != nil {
				t.Fatal(err)
			}
			if err := srv.PublishProfiles(ctx); err != nil { // a second start adds nothing
				t.Fatal(err)
			}
			painURL := profile.BaseURL + "anodyne-pain-score"
			sd := c.do("GET", "/StructureDefinition/anodyne-pain-score", "").expect(t, 200).json(t)
			if sd["url"] != painURL || get(sd, "meta", "versionId") != "1" {
				t.Errorf("published pain score: url %v version %v", sd["url"], get(sd, "meta", "versionId"))
			}
			if snap, _ := get(sd, "snapshot", "element").([]any); len(snap) < 50 {
				t.Errorf("published profile has %d snapshot elements", len(snap))
			}
			bundle := c.do("GET", "/StructureDefinition?url="+url.QueryEscape(painURL), "").expect(t, 200).json(t)
			if n := len(entryList(bundle["entry"])); n != 1 {
				t.Errorf("search by url found %d", n)
			}
			c.do("GET", "/StructureDefinition/heartrate", "").expect(t, 200)

			// A write claiming a profile is validated against it.
			pain := fixture(t, "pain-score-integer")
			c.do("POST", "/Observation", pain).expect(t, 201)
			bad := strings.Replace(pain, `"valueInteger": 6`, `"valueInteger": 11`, 1)
			r := c.do("POST", "/Observation", bad).expect(t, 422)
			if code := r.outcome(t); code != "invariant" || !strings.Contains(string(r.body), "anodyne-pain-1") || !strings.Contains(string(r.body), painURL) {
				t.Errorf("score 11: %s", r.body)
			}
			// The same through update and in a transaction.
			c.do("PUT", "/Observation/pain1", strings.Replace(bad, `"id": "pain1"`, `"id": "pain1"`, 1)).expect(t, 422)
			tx := `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":` + bad + `,"request":{"method":"POST","url":"Observation"}}]}`
			if r := c.do("POST", "", tx); r.status < 400 || r.status >= 500 {
				t.Errorf("transaction with a profile violation: %d %s", r.status, r.body)
			}
			// An unknown claimed profile is refused, naming it.
			unknown := strings.Replace(pain, painURL, "http://example.org/fhir/StructureDefinition/nope", 1)
			r = c.do("POST", "/Observation", unknown).expect(t, 422)
			if !strings.Contains(string(r.body), "http://example.org/fhir/StructureDefinition/nope") {
				t.Errorf("unknown profile not named: %s", r.body)
			}
			// No profile claimed: the core invariants still apply (qty-3).
			qty := `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1,"code":"mg"}}`
			r = c.do("POST", "/Observation", qty).expect(t, 422)
			if !strings.Contains(string(r.body), "qty-3") || !strings.Contains(string(r.body), "Observation.valueQuantity") {
				t.Errorf("qty-3: %s", r.body)
			}

			// $validate against any known profile, by parameter and in Parameters.
			peg := fixture(t, "peg")
			r = c.do("POST", "/Observation/$validate?profile="+url.QueryEscape(painURL), peg).expect(t, 200)
			if !strings.Contains(string(r.body), `"error"`) || !strings.Contains(string(r.body), "anodyne-pain-score-codes") {
				t.Errorf("$validate peg as pain score: %s", r.body)
			}
			params := `{"resourceType":"Parameters","parameter":[{"name":"resource","resource":` + pain + `},{"name":"profile","valueUri":"` + profile.BaseURL + `anodyne-peg"}]}`
			r = c.do("POST", "/Observation/$validate", params).expect(t, 200)
			if !strings.Contains(string(r.body), "pattern patternCodeableConcept") {
				t.Errorf("$validate Parameters pain as peg: %s", r.body)
			}
			r = c.do("POST", "/Observation/$validate", pain).expect(t, 200)
			if strings.Contains(string(r.body), `"error"`) {
				t.Errorf("$validate of a valid pain score: %s", r.body)
			}

			// A user's StructureDefinition: validated, then a known profile.
			userURL := "http://example.org/fhir/StructureDefinition/final-pain-" + b.name
			user := `{"resourceType":"StructureDefinition","url":"` + userURL + `","name":"FinalPain","status":"active","kind":"resource","abstract":false,"type":"Observation",
			  "baseDefinition":"` + painURL + `","derivation":"constraint","differential":{"element":[{"id":"Observation.status","path":"Observation.status","fixedCode":"final"}]}}`
			brokenSD := strings.Replace(user, `"Observation.status","path":"Observation.status"`, `"Observation.nosuch","path":"Observation.nosuch"`, 1)
			r = c.do("POST", "/StructureDefinition", brokenSD).expect(t, 422)
			if !strings.Contains(string(r.body), "Observation.nosuch") {
				t.Errorf("broken StructureDefinition: %s", r.body)
			}
			c.do("POST", "/StructureDefinition", user).expect(t, 201)
			claims := strings.Replace(pain, painURL, userURL, 1)
			c.do("POST", "/Observation", claims).expect(t, 201)
			r = c.do("POST", "/Observation", strings.Replace(claims, `"status": "final"`, `"status": "preliminary"`, 1)).expect(t, 422)
			if !strings.Contains(string(r.body), userURL) || !strings.Contains(string(r.body), "fixedCode") {
				t.Errorf("user profile violation: %s", r.body)
			}
		})
	}
}
