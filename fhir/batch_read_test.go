package fhir_test

import (
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
					t.Errorf("%s: entry status %q, over HTTP %d", u, status, direct.status)
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
				if want["resourceType"] == "Bundle" && want["type"] != "history" {
					if g, w := fullURLs(got), fullURLs(want); !slices.Equal(g, w) {
						t.Errorf("%s: entry Bundle holds %v, over HTTP %v", u, g, w)
					}
				}
				if et := direct.header.Get("ETag"); fmt.Sprint(get(es[i], "response", "etag")) != et && et != "" {
					t.Errorf("%s: entry etag %v, over HTTP %q", u, get(es[i], "response", "etag"), et)
				}
			}
			// Conditional reads: the entry's ifNoneMatch is honoured.
			r = c.do("POST", "", bundleJSON("batch", `{"request":{"method":"GET","url":"Patient/br1","ifNoneMatch":"W/\"2\""}}`)).expect(t, http.StatusOK).json(t)
			if st := fmt.Sprint(get(r, "entry", 0, "response", "status")); !strings.HasPrefix(st, "304") {
				t.Errorf("ifNoneMatch of the current version: %s, want 304", st)
			}
			// Asynchronous operations are not entries.
			r = c.do("POST", "", bundleJSON("batch", `{"request":{"method":"GET","url":"$export"}}`, `{"request":{"method":"GET","url":"Patient/br1/$reindex-status"}}`)).expect(t, http.StatusOK).json(t)
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
