package fhir_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestBatchReadEntries runs every kind of GET entry in a batch and
// compares each answer with the same URL asked over HTTP: the entries call
// the interactions directly, so they must answer exactly as the REST API.
func TestBatchReadEntries(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			c.do("PUT", "/Patient/br1", patientJSON("br1", "Reader")).expect(t, http.StatusCreated)
			c.do("PUT", "/Patient/br1", patientJSON("br1", "Reader2")).expect(t, http.StatusOK)
			obs := `{"resourceType":"Observation","id":"bo1","status":"final","code":{"text":"pain"},"subject":{"reference":"Patient/br1"}}`
			c.do("PUT", "/Observation/bo1", obs).expect(t, http.StatusCreated)
			for i, v := range []int{4, 6, 8} {
				c.do("PUT", fmt.Sprintf("/Observation/bq%d", i), fmt.Sprintf(`{"resourceType":"Observation","id":"bq%d","status":"final",`+
					`"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],`+
					`"code":{"coding":[{"system":"http://loinc.org","code":"72514-3"}]},"subject":{"reference":"Patient/br1"},`+
					`"effectiveDateTime":"2024-01-0%dT10:00:00Z","valueQuantity":{"value":%d,"unit":"{score}","system":"http://unitsofmeasure.org","code":"{score}"}}`,
					i, i+1, v)).expect(t, http.StatusCreated)
			}
			c.do("PUT", "/Patient/gone1", patientJSON("gone1", "Gone")).expect(t, http.StatusCreated)
			c.do("DELETE", "/Patient/gone1", "").expect(t, http.StatusNoContent)

			urls := []string{
				"Patient/br1",
				"Patient/br1/_history/1",
				"Patient/br1/_history",
				"Patient/_history",
				"_history",
				"Patient?family=Reader2",
				"Patient/br1/Observation",
				"Patient/br1/$everything",
				"Patient/$everything",
				"metadata",
				"Patient/gone1",
				"Patient/missing",
				"Patient/br1/_history/9",
				"NotAType/x",
				"Patient?birthdate=notadate",
				// The server's own OperationDefinitions, as over HTTP.
				"OperationDefinition/Observation-lastn",
				"OperationDefinition/observation-stats",
				"OperationDefinition/not-declared",
				// A query may hold URLs of its own; the entry URL is still relative.
				"Observation?code=http://loinc.org|72514-3",
				// The Observation operations: their answers, and their refusals.
				"Observation/$lastn?subject=Patient/br1&code=http://loinc.org|72514-3&max=2",
				"Observation/$lastn?subject=Patient/br1&category=vital-signs",
				"Observation/$lastn?code=http://loinc.org|72514-3",
				"Observation/$stats?coding=http://loinc.org|72514-3&statistic=count,average,maximum&include=true",
				"Observation/$stats?coding=http://loinc.org|72514-3&statistic=no-such",
				"Observation/$stats?statistic=count",
				// SearchParameter $reindex-status, and its refusals.
				"Patient/br1/$reindex-status",
				"SearchParameter/missing/$reindex-status",
			}
			var entries []string
			for _, u := range urls {
				entries = append(entries, fmt.Sprintf(`{"request":{"method":"GET","url":%q}}`, u))
			}
			r := c.do("POST", "", bundleJSON("batch", entries...)).expect(t, http.StatusOK).json(t)
			es := entryList(r["entry"])
			if len(es) != len(urls) {
				t.Fatalf("%d entries for %d requests", len(es), len(urls))
			}
			for i, u := range urls {
				direct := c.do("GET", "/"+u, "")
				status := fmt.Sprint(get(es[i], "response", "status"))
				if !strings.HasPrefix(status, fmt.Sprint(direct.status)+" ") {
					t.Errorf("%s: entry status %q, over HTTP %d: %v", u, status, direct.status, get(es[i], "response", "outcome"))
					continue
				}
				if direct.status >= 300 {
					if get(es[i], "response", "outcome", "resourceType") != "OperationOutcome" {
						t.Errorf("%s: failed entry without an OperationOutcome: %v", u, es[i])
					}
					continue
				}
				want := direct.json(t)
				got, _ := get(es[i], "resource").(map[string]any)
				if got["resourceType"] != want["resourceType"] || want["resourceType"] != "Bundle" && got["id"] != want["id"] {
					t.Errorf("%s: entry resource %v/%v, over HTTP %v/%v", u, got["resourceType"], got["id"], want["resourceType"], want["id"])
				}
				if want["resourceType"] == "Parameters" {
					// An operation's answer, built by the server: equal as a whole.
					if g, w := canonicalJSON(t, got), canonicalJSON(t, want); g != w {
						t.Errorf("%s: entry answers %s, over HTTP %s", u, g, w)
					}
				}
				if want["resourceType"] == "Bundle" && want["type"] != "history" {
					if g, w := fullURLs(got), fullURLs(want); !slices.Equal(g, w) {
						t.Errorf("%s: entry Bundle holds %v, over HTTP %v", u, g, w)
					}
				}
				if et := direct.header.Get("ETag"); fmt.Sprint(get(es[i], "response", "etag")) != et && et != "" {
					t.Errorf("%s: entry etag %v, over HTTP %q", u, get(es[i], "response", "etag"), et)
				}
			}
			// The operations' entries hold what the seeded readings give:
			// the newest two of three, and count 3, mean 6, maximum 8.
			at := func(u string) map[string]any {
				i := slices.Index(urls, u)
				m, _ := get(es[i], "resource").(map[string]any)
				return m
			}
			if g, w := fullURLs(at("Observation/$lastn?subject=Patient/br1&code=http://loinc.org|72514-3&max=2")), []string{"Observation/bq2", "Observation/bq1"}; len(g) != 2 || !strings.HasSuffix(g[0], w[0]) || !strings.HasSuffix(g[1], w[1]) {
				t.Errorf("$lastn max=2 entry holds %v, want %v", g, w)
			}
			st := at("Observation/$stats?coding=http://loinc.org|72514-3&statistic=count,average,maximum&include=true")
			vals := []string{}
			for _, comp := range get(st, "parameter", 0, "resource", "component").([]any) {
				cm := comp.(map[string]any)
				if v, ok := cm["valueInteger"]; ok {
					vals = append(vals, fmt.Sprint(v))
				} else {
					vals = append(vals, fmt.Sprint(get(cm, "valueQuantity", "value")))
				}
			}
			if g := strings.Join(vals, " "); g != "3 6 8" {
				t.Errorf("$stats entry: count, average, maximum %s, want 3 6 8", g)
			}
			if n := len(get(st, "parameter").([]any)); n != 4 {
				t.Errorf("$stats entry: %d parameters, want 4 (the statistics and 3 sources): %s", n, canonicalJSON(t, st))
			}
			// Conditional reads: the entry's ifNoneMatch is honoured.
			r = c.do("POST", "", bundleJSON("batch", `{"request":{"method":"GET","url":"Patient/br1","ifNoneMatch":"W/\"2\""}}`)).expect(t, http.StatusOK).json(t)
			if st := fmt.Sprint(get(r, "entry", 0, "response", "status")); !strings.HasPrefix(st, "304") {
				t.Errorf("ifNoneMatch of the current version: %s, want 304", st)
			}
			// Another server's URL is no entry of this one.
			r = c.do("POST", "", bundleJSON("batch", `{"request":{"method":"GET","url":"http://elsewhere.example/fhir/Patient/br1"}}`)).expect(t, http.StatusOK).json(t)
			if st := fmt.Sprint(get(r, "entry", 0, "response", "status")); !strings.HasPrefix(st, "400") {
				t.Errorf("absolute URL of another server: %s, want 400", st)
			}
			// Asynchronous operations are not entries.
			r = c.do("POST", "", bundleJSON("batch", `{"request":{"method":"GET","url":"$export"}}`, `{"request":{"method":"GET","url":"Group/g1/$export"}}`)).expect(t, http.StatusOK).json(t)
			for i := range 2 {
				if st := fmt.Sprint(get(r, "entry", i, "response", "status")); !strings.HasPrefix(st, "400") {
					t.Errorf("entry %d: %s, want 400", i, st)
				}
			}
		})
	}
}

// fullURLs lists the fullUrls of a Bundle's entries, in order.
func fullURLs(b map[string]any) []string {
	var out []string
	for _, e := range entryList(b["entry"]) {
		out = append(out, fmt.Sprint(get(e, "fullUrl")))
	}
	return out
}

// canonicalJSON is v encoded with sorted keys, for comparing answers.
func canonicalJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
