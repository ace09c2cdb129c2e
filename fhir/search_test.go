package fhir_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// entryIDs lists "Type/id" of a searchset's entries with the given mode.
func entryIDs(t testing.TB, b map[string]any, mode string) []string {
	t.Helper()
	var out []string
	list, _ := get(b, "entry").([]any)
	for _, e := range list {
		if get(e, "search", "mode") != mode {
			continue
		}
		out = append(out, fmt.Sprintf("%v/%v", get(e, "resource", "resourceType"), get(e, "resource", "id")))
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}

// search runs a GET search and returns the matches (Type/id, in order).
func (c *client) search(t testing.TB, q string, hdr ...string) []string {
	t.Helper()
	return entryIDs(t, c.do("GET", q, "", hdr...).expect(t, http.StatusOK).json(t), "match")
}

// synthea is the data of the Synthea bundles, loaded with ids taken from
// their urn:uuid fullUrls, so that tests can compute expected answers
// from the same JSON the server indexed.
type synthea struct {
	byType map[string][]map[string]any
}

func loadSynthea(t *testing.T, c *client) synthea {
	t.Helper()
	files, err := filepath.Glob("../testdata/synthea/*.json")
	if err != nil || len(files) < 3 {
		t.Fatalf("synthea bundles: %v (%d files)", err, len(files))
	}
	data := synthea{byType: map[string][]map[string]any{}}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var bundle struct {
			Entry []struct {
				FullURL  string         `json:"fullUrl"`
				Resource map[string]any `json:"resource"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(raw, &bundle); err != nil {
			t.Fatal(err)
		}
		// Rewrite urn:uuid references to Type/id, as a transaction would.
		refs := map[string]string{}
		for _, e := range bundle.Entry {
			id := strings.TrimPrefix(e.FullURL, "urn:uuid:")
			refs[e.FullURL] = fmt.Sprintf("%v/%s", e.Resource["resourceType"], id)
		}
		text := string(raw)
		for k, v := range refs {
			text = strings.ReplaceAll(text, `"`+k+`"`, `"`+v+`"`)
		}
		ids := make([]string, len(bundle.Entry))
		for i, e := range bundle.Entry {
			ids[i] = strings.TrimPrefix(e.FullURL, "urn:uuid:")
		}
		bundle.Entry = nil
		if err := json.Unmarshal([]byte(text), &bundle); err != nil {
			t.Fatal(err)
		}
		for i, e := range bundle.Entry {
			typ := e.Resource["resourceType"].(string)
			id := ids[i]
			e.Resource["id"] = id
			body, _ := json.Marshal(e.Resource)
			c.do("PUT", "/"+typ+"/"+id, string(body)).expect(t, http.StatusCreated)
			data.byType[typ] = append(data.byType[typ], e.Resource)
		}
	}
	return data
}

// ref returns the "Type/id" a reference element holds.
func ref(v any) string { s, _ := get(v, "reference").(string); return s }

func hasCoding(cc any, system, code string) bool {
	list, _ := get(cc, "coding").([]any)
	for _, c := range list {
		if get(c, "system") == system && get(c, "code") == code {
			return true
		}
	}
	return false
}

// TestSearchSynthea checks search results against answers computed from
// the loaded bundles themselves.
func TestSearchSynthea(t *testing.T) {
	be := backends()[0] // sqlite: the heavy matrix
	c := newServer(t, be.open(t), nil)
	data := loadSynthea(t, c)
	pats := data.byType["Patient"]
	p0 := pats[0]
	p0ref := "Patient/" + p0["id"].(string)
	family := get(p0, "name").([]any)[0].(map[string]any)["family"].(string)

	// The most frequent LOINC code of p0's observations.
	counts := map[string]int{}
	for _, o := range data.byType["Observation"] {
		if ref(o["subject"]) == p0ref {
			for _, cd := range get(o, "code", "coding").([]any) {
				counts[get(cd, "code").(string)]++
			}
		}
	}
	var code string
	for k, n := range counts {
		if code == "" || n > counts[code] || n == counts[code] && k < code {
			code = k
		}
	}
	var wantObs []string
	var dates []string
	for _, o := range data.byType["Observation"] {
		if ref(o["subject"]) == p0ref && hasCoding(o["code"], "http://loinc.org", code) {
			wantObs = append(wantObs, "Observation/"+o["id"].(string))
			dates = append(dates, o["effectiveDateTime"].(string))
		}
	}
	if len(wantObs) < 2 {
		t.Fatalf("data: want several observations of %s for %s, got %d", code, p0ref, len(wantObs))
	}

	t.Run("patient+code sorted by -date", func(t *testing.T) {
		got := c.search(t, "/Observation?patient="+p0ref+"&code=http://loinc.org|"+code+"&_sort=-date&_count=1000")
		if !slices.Equal(sorted(got), sorted(wantObs)) {
			t.Fatalf("got %v, want %v", got, wantObs)
		}
		gotDates := map[string]string{}
		for _, o := range data.byType["Observation"] {
			gotDates["Observation/"+o["id"].(string)] = o["effectiveDateTime"].(string)
		}
		for i := 1; i < len(got); i++ {
			if gotDates[got[i-1]] < gotDates[got[i]] {
				t.Fatalf("not newest first at %d: %s < %s", i, gotDates[got[i-1]], gotDates[got[i]])
			}
		}
	})
	t.Run("chain subject:Patient.name and multi-level", func(t *testing.T) {
		got := c.search(t, "/Observation?subject:Patient.name="+url.QueryEscape(family)+"&code="+code+"&_count=1000")
		if !slices.Equal(sorted(got), sorted(wantObs)) {
			t.Fatalf("chain: got %d, want %d", len(got), len(wantObs))
		}
		// Without the type modifier the chain runs through every target with a name.
		if got2 := c.search(t, "/Observation?subject.name="+url.QueryEscape(family)+"&code="+code+"&_count=1000"); !slices.Equal(sorted(got2), sorted(wantObs)) {
			t.Fatalf("untyped chain: %d", len(got2))
		}
		// Encounter -> Patient -> name, two levels from Observation.
		enc := c.search(t, "/Observation?encounter.patient:Patient.name="+url.QueryEscape(family)+"&code="+code+"&_count=1000")
		if !slices.Equal(sorted(enc), sorted(wantObs)) {
			t.Fatalf("two-level chain: got %d, want %d", len(enc), len(wantObs))
		}
		if n := c.search(t, "/Observation?subject:Patient.name=NoSuchFamilyXyz"); len(n) != 0 {
			t.Fatalf("chain to nobody: %v", n)
		}
	})
	t.Run("_has and nested _has", func(t *testing.T) {
		got := c.search(t, "/Patient?_has:Observation:patient:code=http://loinc.org|"+code)
		var want []string
		for _, p := range pats {
			for _, o := range data.byType["Observation"] {
				if ref(o["subject"]) == "Patient/"+p["id"].(string) && hasCoding(o["code"], "http://loinc.org", code) {
					want = append(want, "Patient/"+p["id"].(string))
					break
				}
			}
		}
		if !slices.Equal(sorted(got), sorted(want)) {
			t.Fatalf("_has: got %v, want %v", got, want)
		}
		// Patients with an Encounter that has an Observation of that code.
		nested := c.search(t, "/Patient?_has:Encounter:patient:_has:Observation:encounter:code="+code)
		if len(nested) == 0 || !slices.Contains(nested, p0ref) {
			t.Fatalf("nested _has: %v", nested)
		}
	})
	t.Run("_include and _revinclude with iterate", func(t *testing.T) {
		b := c.do("GET", "/Observation?patient="+p0ref+"&code="+code+"&_include=Observation:patient&_count=1000", "").expect(t, http.StatusOK).json(t)
		if inc := entryIDs(t, b, "include"); !slices.Equal(inc, []string{p0ref}) {
			t.Fatalf("_include: %v", inc)
		}
		var wantEnc []string
		for _, e := range data.byType["Encounter"] {
			if ref(e["subject"]) == p0ref {
				wantEnc = append(wantEnc, "Encounter/"+e["id"].(string))
			}
		}
		b = c.do("GET", "/Patient?_id="+p0["id"].(string)+"&_revinclude=Encounter:patient", "").expect(t, http.StatusOK).json(t)
		if inc := entryIDs(t, b, "include"); !slices.Equal(sorted(inc), sorted(wantEnc)) {
			t.Fatalf("_revinclude: got %d, want %d", len(inc), len(wantEnc))
		}
		// Encounter -> its Observations (revinclude) -> their performers? No:
		// iterate from included Encounters to their service providers.
		b = c.do("GET", "/Patient?_id="+p0["id"].(string)+"&_revinclude=Encounter:patient&_include:iterate=Encounter:service-provider", "").expect(t, http.StatusOK).json(t)
		var orgs []string
		for _, x := range entryIDs(t, b, "include") {
			if strings.HasPrefix(x, "Organization/") {
				orgs = append(orgs, x)
			}
		}
		wantOrgs := map[string]bool{}
		for _, e := range data.byType["Encounter"] {
			if ref(e["subject"]) == p0ref && ref(e["serviceProvider"]) != "" {
				wantOrgs[ref(e["serviceProvider"])] = true
			}
		}
		if len(orgs) != len(wantOrgs) || len(orgs) == 0 {
			t.Fatalf(":iterate: orgs %v, want %v", orgs, wantOrgs)
		}
	})
	t.Run("compartment", func(t *testing.T) {
		var want []string
		for _, e := range data.byType["Encounter"] {
			if ref(e["subject"]) == p0ref {
				want = append(want, "Encounter/"+e["id"].(string))
			}
		}
		got := c.search(t, "/"+p0ref+"/Encounter?_count=1000")
		if !slices.Equal(sorted(got), sorted(want)) {
			t.Fatalf("compartment: got %d, want %d", len(got), len(want))
		}
		all := c.search(t, "/"+p0ref+"/*?_count=1000")
		other := "Patient/" + pats[1]["id"].(string)
		if !slices.Contains(all, p0ref) || slices.Contains(all, other) {
			t.Fatalf("compartment *: %d results", len(all))
		}
		for _, w := range want {
			if !slices.Contains(all, w) {
				t.Fatalf("compartment * misses %s", w)
			}
		}
		c.do("GET", "/Patient/x/Nonsense", "").expect(t, http.StatusNotFound)
		c.do("GET", "/Observation/x/Encounter", "").expect(t, http.StatusNotFound)
	})
	t.Run("system search with _type", func(t *testing.T) {
		got := c.search(t, "?_type=Patient,Organization&_count=1000")
		if len(got) != len(pats)+len(data.byType["Organization"]) {
			t.Fatalf("_type: %d results", len(got))
		}
		got = c.search(t, "?_type=Patient&_id="+p0["id"].(string))
		if !slices.Equal(got, []string{p0ref}) {
			t.Fatalf("_type&_id: %v", got)
		}
		c.do("GET", "?_type=Nonsense", "").expect(t, http.StatusBadRequest)
		// name is not common to Patient and Organization... it is; birthdate is not.
		c.do("GET", "?_type=Patient,Organization&birthdate=2000", "", "Prefer: handling=strict").expect(t, http.StatusBadRequest)
	})
	t.Run("_summary and _elements", func(t *testing.T) {
		b := c.do("GET", "/Observation?patient="+p0ref+"&_summary=true&_count=1", "").expect(t, http.StatusOK).json(t)
		res := get(b, "entry", 0, "resource").(map[string]any)
		if _, ok := res["category"]; ok {
			t.Errorf("_summary=true kept category (not a summary element)")
		}
		if res["code"] == nil || res["subject"] == nil {
			t.Errorf("_summary=true dropped summary elements: %v", res)
		}
		if !strings.Contains(fmt.Sprint(get(res, "meta", "tag")), "SUBSETTED") {
			t.Errorf("no SUBSETTED tag: %v", get(res, "meta"))
		}
		b = c.do("GET", "/Observation?patient="+p0ref+"&_elements=value&_count=1", "").expect(t, http.StatusOK).json(t)
		res = get(b, "entry", 0, "resource").(map[string]any)
		for k := range res {
			if !slices.Contains([]string{"resourceType", "id", "meta", "status", "code", "valueQuantity", "valueCodeableConcept"}, k) {
				t.Errorf("_elements=value kept %s", k)
			}
		}
		b = c.do("GET", "/Observation?patient="+p0ref+"&_summary=count", "").expect(t, http.StatusOK).json(t)
		var n int
		for _, o := range data.byType["Observation"] {
			if ref(o["subject"]) == p0ref {
				n++
			}
		}
		if entries, _ := b["entry"].([]any); fmt.Sprint(b["total"]) != fmt.Sprint(n) || len(entries) != 0 {
			t.Errorf("_summary=count: total %v entries %v, want %d", b["total"], b["entry"], n)
		}
		c.do("GET", "/Observation?_summary=bogus", "").expect(t, http.StatusBadRequest)
	})
}
