package fhir_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestBatchOperationEntries runs every POSTed operation as a batch entry
// (its Parameters, or for $validate its resource, as entry.resource) and
// compares each answer with the same POST over HTTP; a transaction runs
// them as reads after its writes, and one naming no operation of this
// server fails before anything is written.
func TestBatchOperationEntries(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			c.do("PUT", "/Patient/bp1", patientJSON("bp1", "Poster")).expect(t, http.StatusCreated)
			for i, v := range []int{3, 5, 9} {
				c.do("PUT", fmt.Sprintf("/Observation/bpq%d", i), fmt.Sprintf(`{"resourceType":"Observation","id":"bpq%d","status":"final",`+
					`"code":{"coding":[{"system":"http://loinc.org","code":"72514-3"}]},"subject":{"reference":"Patient/bp1"},`+
					`"effectiveDateTime":"2024-02-0%dT10:00:00Z","valueQuantity":{"value":%d,"unit":"{score}","system":"http://unitsofmeasure.org","code":"{score}"}}`,
					i, i+1, v)).expect(t, http.StatusCreated)
			}
			type op struct{ url, body string }
			ops := []op{
				{"Observation/$lastn", `{"resourceType":"Parameters","parameter":[{"name":"subject","valueReference":{"reference":"Patient/bp1"}},{"name":"code","valueCoding":{"system":"http://loinc.org","code":"72514-3"}},{"name":"max","valueInteger":2}]}`},
				{"Observation/$lastn?max=1", `{"resourceType":"Parameters","parameter":[{"name":"patient","valueString":"bp1"},{"name":"code","valueString":"http://loinc.org|72514-3"}]}`},
				{"Observation/$lastn", `{"resourceType":"Parameters","parameter":[{"name":"subject"}]}`},
				{"Observation/$stats", `{"resourceType":"Parameters","parameter":[{"name":"coding","valueCoding":{"system":"http://loinc.org","code":"72514-3"}},{"name":"statistic","valueCode":"count"},{"name":"statistic","valueCode":"maximum"}]}`},
				{"Observation/$stats", `{"resourceType":"Patient"}`},
				{"Patient/$validate", patientJSON("v1", "Valid")},
				{"Patient/$validate", `{"resourceType":"Patient","birthDate":"not a date"}`},
				{"Observation/$validate", patientJSON("v1", "Valid")},
				{"Patient/bp1/$validate", ""},
				{"Patient/missing/$validate", ""},
			}
			var entries []string
			for _, o := range ops {
				e := fmt.Sprintf(`{"request":{"method":"POST","url":%q}`, o.url)
				if o.body != "" {
					e += `,"resource":` + o.body
				}
				entries = append(entries, e+"}")
			}
			r := c.do("POST", "", bundleJSON("batch", entries...)).expect(t, http.StatusOK).json(t)
			es := entryList(r["entry"])
			if len(es) != len(ops) {
				t.Fatalf("%d entries for %d requests", len(es), len(ops))
			}
			for i, o := range ops {
				direct := c.do("POST", "/"+o.url, o.body)
				status := fmt.Sprint(get(es[i], "response", "status"))
				if !strings.HasPrefix(status, fmt.Sprint(direct.status)+" ") {
					t.Errorf("POST %s: entry status %q, over HTTP %d: %v", o.url, status, direct.status, get(es[i], "response", "outcome"))
					continue
				}
				if direct.status >= 300 {
					continue
				}
				want := direct.json(t)
				got, _ := get(es[i], "resource").(map[string]any)
				switch want["resourceType"] {
				case "Bundle":
					if g, w := fullURLs(got), fullURLs(want); !slices.Equal(g, w) {
						t.Errorf("POST %s: entry Bundle holds %v, over HTTP %v", o.url, g, w)
					}
				default:
					if g, w := canonicalJSON(t, got), canonicalJSON(t, want); g != w {
						t.Errorf("POST %s: entry answers %s, over HTTP %s", o.url, g, w)
					}
				}
			}
			// Independent of the HTTP answers: the newest two of the three
			// readings, and the invalid Patient's error.
			if g := fullURLs(get(es[0], "resource").(map[string]any)); len(g) != 2 || !strings.HasSuffix(g[0], "Observation/bpq2") || !strings.HasSuffix(g[1], "Observation/bpq1") {
				t.Errorf("$lastn max=2 entry holds %v, want bpq2, bpq1", g)
			}
			if !strings.Contains(canonicalJSON(t, get(es[6], "resource")), `"severity":"error"`) {
				t.Errorf("$validate of an invalid Patient: %v", get(es[6], "resource"))
			}
			// Not operations of this server, or not Bundle entries.
			r = c.do("POST", "", bundleJSON("batch",
				`{"request":{"method":"POST","url":"Patient/$nothing"},"resource":{"resourceType":"Parameters"}}`,
				`{"request":{"method":"POST","url":"$import"}}`,
				`{"request":{"method":"POST","url":"Patient/bp1/$everything"}}`)).expect(t, http.StatusOK).json(t)
			for i := range 3 {
				if st := fmt.Sprint(get(r, "entry", i, "response", "status")); !strings.HasPrefix(st, "400") {
					t.Errorf("entry %d: %s, want 400", i, st)
				}
			}
			// In a transaction an operation is a read: run after the writes
			// (it sees the reading the transaction creates), writing nothing.
			newObs := `{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"72514-3"}]},"subject":{"reference":"Patient/bp1"},` +
				`"effectiveDateTime":"2024-03-01T10:00:00Z","valueQuantity":{"value":1,"unit":"{score}","system":"http://unitsofmeasure.org","code":"{score}"}}`
			r = c.do("POST", "", bundleJSON("transaction",
				`{"request":{"method":"POST","url":"Observation/$lastn"},"resource":`+ops[0].body+`}`,
				`{"fullUrl":"urn:uuid:2b5c3f0e-8f7a-4d3e-9a51-6c1e0f2d7a10","request":{"method":"POST","url":"Observation"},"resource":`+newObs+`}`,
			)).expect(t, http.StatusOK).json(t)
			created := fmt.Sprint(get(r, "entry", 1, "response", "location"))
			id := strings.Split(strings.SplitAfter(created, "Observation/")[1], "/")[0]
			if g := fullURLs(get(r, "entry", 0, "resource").(map[string]any)); len(g) != 2 || !strings.HasSuffix(g[0], "Observation/"+id) {
				t.Errorf("$lastn entry of a transaction holds %v, want the created Observation/%s first", g, id)
			}
			before := c.do("GET", "/Observation?_summary=count", "").expect(t, http.StatusOK).json(t)["total"]
			for _, bad := range []struct {
				entry  string
				status int
			}{
				{`{"request":{"method":"POST","url":"Observation/$nothing"}}`, http.StatusBadRequest},
				{`{"request":{"method":"POST","url":"Observation/$lastn"},"resource":{"resourceType":"Patient"}}`, http.StatusBadRequest},
				{`{"request":{"method":"POST","url":"NotAType/$validate"},"resource":{"resourceType":"Patient"}}`, http.StatusNotFound},
			} {
				c.do("POST", "", bundleJSON("transaction",
					`{"fullUrl":"urn:uuid:6a1d0c3b-2e4f-4b7a-8c9d-0e1f2a3b4c5d","request":{"method":"POST","url":"Observation"},"resource":`+newObs+`}`,
					bad.entry,
				)).expect(t, bad.status)
			}
			if after := c.do("GET", "/Observation?_summary=count", "").expect(t, http.StatusOK).json(t)["total"]; fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("a transaction refused for its operation entry wrote: %v Observations, before %v", after, before)
			}
		})
	}
}
