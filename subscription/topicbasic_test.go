package subscription_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
)

// ext is the value (or the sub-extensions) of the extension url on v.
func ext(v any, u string) any {
	exts, _ := get(v, "extension").([]any)
	for _, e := range exts {
		if get(e, "url") == u {
			if sub := get(e, "extension"); sub != nil {
				return e
			}
			for k, val := range e.(map[string]any) {
				if strings.HasPrefix(k, "value") {
					return val
				}
			}
		}
	}
	return nil
}

// TestTopicsAsBasic: the served topics are readable and searchable as
// the Backport IG's R4 SubscriptionTopics (Basic, code SubscriptionTopic),
// one per topic definition, under the decision point (a client without
// Basic access gets 403) and the output filter (_elements); they validate
// as R4; a client cannot change or delete them; a second server on the
// same store leaves them as they are.
func TestTopicsAsBasic(t *testing.T) {
	const topics = "http://anodyne-fhir.org/fhir/SubscriptionTopic/"
	want := map[string]struct{ resource, query, fhirPath string }{
		topics + "pain-score":              {"Observation", "code=http://loinc.org|72514-3,http://loinc.org|38208-5", ""},
		topics + "vital-sign-out-of-range": {"Observation", "", "interpretation.coding.where("},
		topics + "flag-raised":             {"Flag", "", "%current.where(status = 'active').exists()"},
	}
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			ps := map[string]*auth.Principal{
				"reader": {ClientID: "reader", Subject: "reader", Scopes: auth.ParseScopes("system/Basic.cruds system/Observation.rs")},
				"other":  {ClientID: "other", Subject: "other", Scopes: auth.ParseScopes("system/Observation.rs")},
			}
			b := be.Open(t)
			s := start(t, b, ps, nil)
			search := "/Basic?code=" + url.QueryEscape("http://hl7.org/fhir/fhir-types|SubscriptionTopic")
			var entries []any
			for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				entries, _ = get(s.do(t, "reader", "GET", search, "").Expect(t, http.StatusOK).JSON(t), "entry").([]any)
				if len(entries) >= len(want) || time.Now().After(deadline) {
					break
				}
			}
			if len(entries) != len(want) {
				t.Fatalf("%d SubscriptionTopic Basics, want %d", len(entries), len(want))
			}
			titles := s.svc.Topics()
			var ids []string
			for _, e := range entries {
				res := get(e, "resource")
				u, _ := ext(res, "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.url").(string)
				w, ok := want[u]
				if !ok {
					t.Fatalf("a Basic for topic %q", u)
				}
				if got := ext(res, "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.title"); got != titles[u] {
					t.Errorf("%s: title %v, want %q", u, got, titles[u])
				}
				trig := ext(res, "http://hl7.org/fhir/4.3/StructureDefinition/extension-SubscriptionTopic.resourceTrigger")
				if got := ext(trig, "resource"); got != "http://hl7.org/fhir/StructureDefinition/"+w.resource {
					t.Errorf("%s: trigger resource %v", u, got)
				}
				if got, _ := ext(ext(trig, "queryCriteria"), "current").(string); got != w.query {
					t.Errorf("%s: queryCriteria.current %q, want %q", u, got, w.query)
				}
				if got, _ := ext(trig, "fhirPathCriteria").(string); !strings.HasPrefix(strings.TrimPrefix(got, "%current.where("), strings.TrimPrefix(w.fhirPath, "%current.where(")) || (w.fhirPath == "") != (got == "") {
					t.Errorf("%s: fhirPathCriteria %q, want %q", u, got, w.fhirPath)
				}
				if get(res, "meta", "versionId") != "1" {
					t.Errorf("%s: version %v", u, get(res, "meta", "versionId"))
				}
				ids = append(ids, get(res, "id").(string))
			}
			slices.Sort(ids)
			if fmt.Sprint(ids) != "[anodyne-topic-flag-raised anodyne-topic-pain-score anodyne-topic-vital-sign-out-of-range]" {
				t.Errorf("ids %v", ids)
			}

			// Read, under the decision point and the output filter.
			one := s.do(t, "reader", "GET", "/Basic/anodyne-topic-pain-score", "").Expect(t, http.StatusOK)
			s.do(t, "other", "GET", "/Basic/anodyne-topic-pain-score", "").Expect(t, http.StatusForbidden)
			s.do(t, "other", "GET", search, "").Expect(t, http.StatusForbidden)
			shaped := get(s.do(t, "reader", "GET", "/Basic?_id=anodyne-topic-pain-score&_elements=code", "").Expect(t, http.StatusOK).JSON(t), "entry", 0, "resource")
			if get(shaped, "extension") != nil || get(shaped, "code", "coding", 0, "code") != "SubscriptionTopic" {
				t.Errorf("_elements=code: %v", shaped)
			}
			// Valid R4.
			oo := s.do(t, "reader", "POST", "/Basic/$validate", string(one.Body)).JSON(t)
			for _, is := range get(oo, "issue").([]any) {
				if sev := get(is, "severity"); sev == "error" || sev == "fatal" {
					t.Errorf("the topic Basic does not validate: %v", is)
				}
			}

			// A client cannot change or delete them.
			changed := strings.Replace(string(one.Body), "New or changed pain score", "Something else", 1)
			s.do(t, "reader", "PUT", "/Basic/anodyne-topic-pain-score", changed).Expect(t, http.StatusUnprocessableEntity)
			s.do(t, "reader", "DELETE", "/Basic/anodyne-topic-flag-raised", "").Expect(t, http.StatusUnprocessableEntity)
			s.do(t, "reader", "POST", "/Basic", `{"resourceType":"Basic","code":{"text":"an ordinary Basic"}}`).Expect(t, http.StatusCreated)

			// A second server on the store finds them up to date.
			s2 := start(t, b, ps, nil)
			time.Sleep(time.Second)
			for _, id := range ids {
				r := s2.do(t, "reader", "GET", "/Basic/"+id, "").Expect(t, http.StatusOK).JSON(t)
				if get(r, "meta", "versionId") != "1" {
					t.Errorf("%s: version %v after a second server started", id, get(r, "meta", "versionId"))
				}
			}
		})
	}
}
