package fhir_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// observation is a typical vital sign with a decimal whose text must
// survive (1.50), an extension and a contained resource.
const observation = `{
  "resourceType": "Observation",
  "id": "ignored-by-create",
  "meta": {"versionId": "77", "lastUpdated": "2001-01-01T00:00:00Z", "tag": [{"system": "http://example.org/tags", "code": "keep"}]},
  "extension": [{"url": "http://example.org/fhir/StructureDefinition/device-note", "valueString": "cuff <adult>"}],
  "contained": [{"resourceType": "Patient", "id": "p1", "name": [{"family": "Contained"}]}],
  "status": "final",
  "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
  "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5", "display": "Body temperature"}]},
  "subject": {"reference": "#p1"},
  "effectiveDateTime": "2024-03-01T10:00:00Z",
  "valueQuantity": {"value": 1.50, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"}
}`

func patientJSON(id, family string) string {
	return fmt.Sprintf(`{"resourceType":"Patient","id":%q,"active":true,"name":[{"family":%q}]}`, id, family)
}

// TestInteractions exercises every interaction over HTTP on every backend.
func TestInteractions(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			t.Run("create read vread update delete", func(t *testing.T) { testCRUD(t, c) })
			t.Run("conditional read", func(t *testing.T) { testConditionalRead(t, c) })
			t.Run("update as create and If-Match", func(t *testing.T) { testUpdateAsCreate(t, c) })
			t.Run("prefer", func(t *testing.T) { testPrefer(t, c) })
			t.Run("patch", func(t *testing.T) { testPatch(t, c) })
			t.Run("history", func(t *testing.T) { testHistory(t, c) })
			t.Run("search", func(t *testing.T) { testSearch(t, c) })
			t.Run("validate", func(t *testing.T) { testValidate(t, c) })
			t.Run("metadata", func(t *testing.T) { testMetadata(t, c) })
			t.Run("content negotiation", func(t *testing.T) { testNegotiation(t, c) })
			t.Run("concurrent updates", func(t *testing.T) { testConcurrentUpdates(t, c) })
			t.Run("errors", func(t *testing.T) { testErrors(t, c) })
		})
	}
}

func testCRUD(t *testing.T, c *client) {
	r := c.do("POST", "/Observation", observation).expect(t, http.StatusCreated)
	loc := r.header.Get("Location")
	if !strings.HasPrefix(loc, c.base+"/Observation/") || !strings.HasSuffix(loc, "/_history/1") {
		t.Fatalf("Location %q, want %s/Observation/<id>/_history/1", loc, c.base)
	}
	if et := r.header.Get("ETag"); et != `W/"1"` {
		t.Errorf("ETag %q, want W/\"1\"", et)
	}
	created := r.json(t)
	id, _ := created["id"].(string)
	if id == "" || id == "ignored-by-create" {
		t.Fatalf("server did not assign an id: %q", id)
	}
	if got := get(created, "meta", "versionId"); got != "1" {
		t.Errorf("meta.versionId %v, want 1 (client value overwritten)", got)
	}
	if got, _ := get(created, "meta", "lastUpdated").(string); got == "" || strings.HasPrefix(got, "2001") {
		t.Errorf("meta.lastUpdated %q was not set by the server", got)
	}
	if got := get(created, "meta", "tag", 0, "code"); got != "keep" {
		t.Errorf("meta.tag lost: %v", got)
	}
	if !strings.HasPrefix(string(r.body), `{"resourceType":"Observation"`) {
		t.Errorf("resourceType is not first: %.60s", r.body)
	}

	read := c.do("GET", "/Observation/"+id, "").expect(t, http.StatusOK)
	if string(read.body) != string(r.body) {
		t.Errorf("read differs from create response:\n%s\n%s", read.body, r.body)
	}
	if !strings.Contains(string(read.body), `"value":1.50`) {
		t.Errorf("decimal 1.50 lost its precision: %s", read.body)
	}
	if got := get(read.json(t), "contained", 0, "name", 0, "family"); got != "Contained" {
		t.Errorf("contained resource lost: %v", got)
	}
	if got := get(read.json(t), "extension", 0, "valueString"); got != "cuff <adult>" {
		t.Errorf("extension lost: %v", got)
	}
	if read.header.Get("Last-Modified") == "" || read.header.Get("ETag") != `W/"1"` {
		t.Errorf("read headers: ETag %q Last-Modified %q", read.header.Get("ETag"), read.header.Get("Last-Modified"))
	}

	upd := strings.Replace(observation, `"ignored-by-create"`, fmt.Sprintf("%q", id), 1)
	upd = strings.Replace(upd, `"value": 1.50`, `"value": 37.250`, 1)
	u := c.do("PUT", "/Observation/"+id, upd).expect(t, http.StatusOK)
	if u.header.Get("ETag") != `W/"2"` || get(u.json(t), "meta", "versionId") != "2" {
		t.Errorf("update: ETag %q versionId %v, want 2", u.header.Get("ETag"), get(u.json(t), "meta", "versionId"))
	}
	if !strings.HasSuffix(u.header.Get("Location"), "/_history/2") {
		t.Errorf("update Location %q", u.header.Get("Location"))
	}
	v1 := c.do("GET", "/Observation/"+id+"/_history/1", "").expect(t, http.StatusOK)
	if string(v1.body) != string(r.body) {
		t.Errorf("vread 1 differs from the created version")
	}
	v2 := c.do("GET", "/Observation/"+id+"/_history/2", "").expect(t, http.StatusOK)
	if !strings.Contains(string(v2.body), `"value":37.250`) {
		t.Errorf("vread 2: %s", v2.body)
	}
	if code := c.do("GET", "/Observation/"+id+"/_history/3", "").expect(t, http.StatusNotFound).outcome(t); code != "not-found" {
		t.Errorf("vread of a missing version: code %q", code)
	}

	d := c.do("DELETE", "/Observation/"+id, "").expect(t, http.StatusNoContent)
	if d.header.Get("ETag") != `W/"3"` {
		t.Errorf("delete ETag %q, want W/\"3\"", d.header.Get("ETag"))
	}
	if code := c.do("GET", "/Observation/"+id, "").expect(t, http.StatusGone).outcome(t); code != "deleted" {
		t.Errorf("read after delete: code %q, want deleted", code)
	}
	c.do("GET", "/Observation/"+id+"/_history/2", "").expect(t, http.StatusOK)
	c.do("GET", "/Observation/"+id+"/_history/3", "").expect(t, http.StatusGone)
	// Delete is idempotent and does not add versions.
	c.do("DELETE", "/Observation/"+id, "").expect(t, http.StatusNoContent)
	c.do("DELETE", "/Observation/never-existed", "").expect(t, http.StatusNoContent)
	h := c.do("GET", "/Observation/"+id+"/_history", "").expect(t, http.StatusOK).json(t)
	if n := len(entryList(get(h, "entry"))); n != 3 {
		t.Errorf("history after delete has %d entries, want 3", n)
	}
	if m := get(h, "entry", 0, "request", "method"); m != "DELETE" {
		t.Errorf("newest history entry method %v, want DELETE", m)
	}
	// A deleted resource can be brought back by update (a new version, 201).
	c.do("PUT", "/Observation/"+id, upd).expect(t, http.StatusCreated)
	if v := get(c.do("GET", "/Observation/"+id, "").expect(t, http.StatusOK).json(t), "meta", "versionId"); v != "4" {
		t.Errorf("resurrected versionId %v, want 4", v)
	}
}

func testConditionalRead(t *testing.T, c *client) {
	r := c.do("PUT", "/Patient/cond-read", patientJSON("cond-read", "Cond")).expect(t, http.StatusCreated)
	lm := r.header.Get("Last-Modified")
	lmTime, err := http.ParseTime(lm)
	if err != nil {
		t.Fatalf("Last-Modified %q: %v", lm, err)
	}
	cases := []struct {
		name   string
		header string
		want   int
	}{
		{"matching etag", `If-None-Match: W/"1"`, http.StatusNotModified},
		{"other etag", `If-None-Match: W/"2"`, http.StatusOK},
		{"star", `If-None-Match: *`, http.StatusNotModified},
		{"modified since earlier", "If-Modified-Since: " + lmTime.Add(-time.Hour).Format(http.TimeFormat), http.StatusOK},
		{"not modified since", "If-Modified-Since: " + lmTime.Format(http.TimeFormat), http.StatusNotModified},
		{"bad date ignored", "If-Modified-Since: yesterday", http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := c.do("GET", "/Patient/cond-read", "", tc.header).expect(t, tc.want)
			if tc.want == http.StatusNotModified && len(res.body) != 0 {
				t.Errorf("304 with a body: %s", res.body)
			}
		})
	}
}

func testUpdateAsCreate(t *testing.T, c *client) {
	c.do("PUT", "/Patient/client-chosen", patientJSON("client-chosen", "One")).expect(t, http.StatusCreated)
	c.do("PUT", "/Patient/client-chosen", patientJSON("client-chosen", "Two")).expect(t, http.StatusOK)
	c.do("PUT", "/Patient/client-chosen", patientJSON("client-chosen", "Three"), `If-Match: W/"2"`).expect(t, http.StatusOK)
	r := c.do("PUT", "/Patient/client-chosen", patientJSON("client-chosen", "Stale"), `If-Match: W/"2"`).expect(t, http.StatusPreconditionFailed)
	if r.outcome(t) != "conflict" || r.header.Get("ETag") != `W/"3"` {
		t.Errorf("412: ETag %q body %s", r.header.Get("ETag"), r.body)
	}
	c.do("PUT", "/Patient/not-there", patientJSON("not-there", "X"), `If-Match: W/"1"`).expect(t, http.StatusPreconditionFailed)
	c.do("DELETE", "/Patient/client-chosen", "", `If-Match: W/"1"`).expect(t, http.StatusPreconditionFailed)
	c.do("DELETE", "/Patient/client-chosen", "", `If-Match: W/"3"`).expect(t, http.StatusNoContent)
	got := c.do("GET", "/Patient/client-chosen/_history/3", "").expect(t, http.StatusOK).json(t)
	if get(got, "name", 0, "family") != "Three" {
		t.Errorf("version 3 is %v", got)
	}
}

func testPrefer(t *testing.T, c *client) {
	r := c.do("POST", "/Patient", patientJSON("x", "Minimal"), "Prefer: return=minimal").expect(t, http.StatusCreated)
	if len(r.body) != 0 || r.header.Get("Location") == "" {
		t.Errorf("return=minimal: body %q Location %q", r.body, r.header.Get("Location"))
	}
	r = c.do("POST", "/Patient", patientJSON("x", "OO"), "Prefer: return=OperationOutcome").expect(t, http.StatusCreated)
	if r.outcome(t) != "informational" {
		t.Errorf("return=OperationOutcome: %s", r.body)
	}
	r = c.do("POST", "/Patient", patientJSON("x", "Rep"), "Prefer: return=representation").expect(t, http.StatusCreated)
	if get(r.json(t), "name", 0, "family") != "Rep" {
		t.Errorf("return=representation: %s", r.body)
	}
}

func testPatch(t *testing.T, c *client) {
	c.do("PUT", "/Patient/patched", patientJSON("patched", "Before")).expect(t, http.StatusCreated)
	patch := func(body string, hdr ...string) response {
		return c.do("PATCH", "/Patient/patched", body, append([]string{"Content-Type: application/json-patch+json"}, hdr...)...)
	}
	r := patch(`[{"op":"replace","path":"/name/0/family","value":"After"},{"op":"add","path":"/birthDate","value":"1970-01-02"}]`).expect(t, http.StatusOK)
	m := r.json(t)
	if get(m, "name", 0, "family") != "After" || m["birthDate"] != "1970-01-02" || get(m, "meta", "versionId") != "2" {
		t.Errorf("patched resource: %s", r.body)
	}
	if r.header.Get("ETag") != `W/"2"` {
		t.Errorf("patch ETag %q", r.header.Get("ETag"))
	}
	cases := []struct {
		name string
		body string
		hdr  []string
		want int
	}{
		{"id change", `[{"op":"replace","path":"/id","value":"other"}]`, nil, http.StatusUnprocessableEntity},
		{"type change", `[{"op":"replace","path":"/resourceType","value":"Group"}]`, nil, http.StatusUnprocessableEntity},
		{"invalid result", `[{"op":"replace","path":"/birthDate","value":"not-a-date"}]`, nil, http.StatusUnprocessableEntity},
		{"failed test op", `[{"op":"test","path":"/name/0/family","value":"Nope"}]`, nil, http.StatusUnprocessableEntity},
		{"not a patch", `{"op":"replace"}`, nil, http.StatusBadRequest},
		{"stale If-Match", `[{"op":"remove","path":"/active"}]`, []string{`If-Match: W/"1"`}, http.StatusPreconditionFailed},
		{"fhir+json body", `[{"op":"remove","path":"/active"}]`, []string{"Content-Type: application/fhir+json"}, http.StatusUnsupportedMediaType},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { patch(tc.body, tc.hdr...).expect(t, tc.want).outcome(t) })
	}
	// Nothing above changed the resource.
	if v := get(c.do("GET", "/Patient/patched", "").expect(t, http.StatusOK).json(t), "meta", "versionId"); v != "2" {
		t.Errorf("failed patches changed the resource: version %v", v)
	}
	// Patches that leave the content as it is write no new version: a
	// passing test op, an empty patch, and a replace by the same value
	// (also one that touches only meta.lastUpdated).
	for _, body := range []string{
		`[{"op":"test","path":"/name/0/family","value":"After"}]`,
		`[]`,
		`[{"op":"replace","path":"/birthDate","value":"1970-01-02"}]`,
		`[{"op":"replace","path":"/meta/lastUpdated","value":"2001-01-01T00:00:00Z"}]`,
	} {
		r := patch(body).expect(t, http.StatusOK)
		if r.header.Get("ETag") != `W/"2"` || get(r.json(t), "meta", "versionId") != "2" {
			t.Errorf("unchanged patch %s: ETag %q, body %s", body, r.header.Get("ETag"), r.body)
		}
	}
	h := c.do("GET", "/Patient/patched/_history", "").expect(t, http.StatusOK).json(t)
	if n := len(entryList(h["entry"])); n != 2 {
		t.Errorf("history after unchanged patches has %d versions, want 2", n)
	}
	c.do("PATCH", "/Patient/nobody", `[]`, "Content-Type: application/json-patch+json").expect(t, http.StatusNotFound)
}

func testHistory(t *testing.T, c *client) {
	start := time.Now().UTC().Add(-time.Second)
	for i := 1; i <= 3; i++ {
		c.do("PUT", "/Patient/hist", patientJSON("hist", fmt.Sprint("V", i))).expect(t, []int{0, 201, 200, 200}[i])
	}
	h := c.do("GET", "/Patient/hist/_history", "").expect(t, http.StatusOK).json(t)
	if h["type"] != "history" {
		t.Fatalf("history Bundle type %v", h["type"])
	}
	entries := entryList(get(h, "entry"))
	if len(entries) != 3 {
		t.Fatalf("instance history: %d entries, want 3", len(entries))
	}
	for i, want := range []string{"V3", "V2", "V1"} {
		if got := get(entries[i], "resource", "name", 0, "family"); got != want {
			t.Errorf("entry %d is %v, want %s (newest first)", i, got, want)
		}
	}
	if get(entries[2], "response", "status") != "201 Created" || get(entries[0], "request", "method") != "PUT" {
		t.Errorf("entry request/response: %v / %v", get(entries[2], "response"), get(entries[0], "request"))
	}
	if fu := get(entries[0], "fullUrl"); fu != c.base+"/Patient/hist" {
		t.Errorf("fullUrl %v", fu)
	}

	// Paging: _count=1 walks the three versions through next links.
	var seen []string
	next := c.base + "/Patient/hist/_history?_count=1"
	for next != "" && len(seen) < 10 {
		page := c.do("GET", next, "").expect(t, http.StatusOK).json(t)
		for _, e := range entryList(get(page, "entry")) {
			seen = append(seen, get(e, "resource", "name", 0, "family").(string))
		}
		next = ""
		for _, l := range get(page, "link").([]any) {
			if get(l, "relation") == "next" {
				next = get(l, "url").(string)
			}
		}
		if next != "" {
			// A cursor bound to this query cannot be replayed on another one.
			u, _ := url.Parse(next)
			cur := u.Query().Get("_cursor")
			c.do("GET", "/Patient/_history?_count=1&_cursor="+url.QueryEscape(cur), "").expect(t, http.StatusBadRequest).outcome(t)
			c.do("GET", "/Patient/hist/_history?_count=1&_cursor="+url.QueryEscape(cur+"x"), "").expect(t, http.StatusBadRequest)
		}
	}
	if strings.Join(seen, ",") != "V3,V2,V1" {
		t.Errorf("paged history %v, want V3,V2,V1", seen)
	}

	since := url.QueryEscape(start.Format(time.RFC3339Nano))
	for _, path := range []string{"/Patient/_history?_since=" + since, "/_history?_since=" + since} {
		b := c.do("GET", path, "").expect(t, http.StatusOK).json(t)
		found := 0
		for _, e := range entryList(get(b, "entry")) {
			if get(e, "fullUrl") == c.base+"/Patient/hist" {
				found++
			}
		}
		if found != 3 {
			t.Errorf("%s: %d versions of Patient/hist, want 3", path, found)
		}
	}
	future := url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	if es, _ := get(c.do("GET", "/_history?_since="+future, "").expect(t, http.StatusOK).json(t), "entry").([]any); len(es) != 0 {
		t.Errorf("_since in the future: %d entries", len(es))
	}
	// _at: the version current at an instant between V1 and now is one version.
	at := url.QueryEscape(time.Now().UTC().Format(time.RFC3339Nano))
	atb := c.do("GET", "/Patient/hist/_history?_at="+at, "").expect(t, http.StatusOK).json(t)
	if es := entryList(get(atb, "entry")); len(es) != 1 || get(es[0], "resource", "name", 0, "family") != "V3" {
		t.Errorf("_at now: %v", es)
	}
	c.do("GET", "/Patient/hist/_history?_since=last-tuesday", "").expect(t, http.StatusBadRequest).outcome(t)
}

func testSearch(t *testing.T, c *client) {
	for i, fam := range []string{"Searchalpha", "Searchbeta", "Searchgamma"} {
		c.do("PUT", fmt.Sprintf("/Patient/s%d", i), patientJSON(fmt.Sprintf("s%d", i), fam)).expect(t, http.StatusCreated)
	}
	b := c.do("GET", "/Patient?family=Searchbeta&_total=accurate", "").expect(t, http.StatusOK).json(t)
	if b["type"] != "searchset" || fmt.Sprint(b["total"]) != "1" {
		t.Fatalf("search: type %v total %v", b["type"], b["total"])
	}
	if get(b, "entry", 0, "fullUrl") != c.base+"/Patient/s1" || get(b, "entry", 0, "search", "mode") != "match" {
		t.Errorf("entry: %v", get(b, "entry", 0))
	}
	ids := func(b map[string]any) []string {
		var out []string
		for _, e := range entryList(get(b, "entry")) {
			out = append(out, get(e, "resource", "id").(string))
		}
		return out
	}
	if got := ids(c.do("GET", "/Patient?_id=s0,s2&_sort=family", "").expect(t, http.StatusOK).json(t)); strings.Join(got, ",") != "s0,s2" {
		t.Errorf("_id search: %v", got)
	}
	if got := ids(c.do("GET", "/Patient?_id=s0,s1,s2&_sort=-family", "").expect(t, http.StatusOK).json(t)); strings.Join(got, ",") != "s2,s1,s0" {
		t.Errorf("_sort=-family: %v", got)
	}
	// POST _search with a form body.
	pr := c.do("POST", "/Patient/_search", "family=Searchgamma", "Content-Type: application/x-www-form-urlencoded").expect(t, http.StatusOK).json(t)
	if got := ids(pr); strings.Join(got, ",") != "s2" {
		t.Errorf("POST _search: %v", got)
	}
	// Unknown parameters are ignored and left out of the self link, or
	// rejected with Prefer: handling=strict.
	u := c.do("GET", "/Patient?family=Searchalpha&bogus=1", "").expect(t, http.StatusOK).json(t)
	self := get(u, "link", 0, "url").(string)
	if strings.Contains(self, "bogus") || !strings.Contains(self, "family=Searchalpha") {
		t.Errorf("self link %q", self)
	}
	c.do("GET", "/Patient?bogus=1", "", "Prefer: handling=strict").expect(t, http.StatusBadRequest).outcome(t)
	c.do("GET", "/Patient?birthdate=notadate", "").expect(t, http.StatusBadRequest).outcome(t)
	// Paging through next links with a signed cursor.
	var all []string
	next := c.base + "/Patient?_id=s0,s1,s2&_count=2&_sort=family"
	for next != "" {
		page := c.do("GET", next, "").expect(t, http.StatusOK).json(t)
		all = append(all, ids(page)...)
		next = ""
		for _, l := range get(page, "link").([]any) {
			if get(l, "relation") == "next" {
				next = get(l, "url").(string)
				tampered := strings.Replace(next, "_id=s0", "_id=s9", 1)
				c.do("GET", tampered, "").expect(t, http.StatusBadRequest)
			}
		}
	}
	if strings.Join(all, ",") != "s0,s1,s2" {
		t.Errorf("paged search %v", all)
	}
	// lastUpdated has millisecond precision: make s0 clearly the newest.
	time.Sleep(5 * time.Millisecond)
	c.do("PUT", "/Patient/s0", patientJSON("s0", "Searchalpha")).expect(t, http.StatusOK)
	if got := ids(c.do("GET", "/Patient?_id=s0,s1,s2&_lastUpdated=gt2000-01-01&_sort=-_lastUpdated", "").expect(t, http.StatusOK).json(t)); len(got) != 3 || got[0] != "s0" {
		t.Errorf("_lastUpdated=gt2000 sorted newest first: %v", got)
	}
	if got := ids(c.do("GET", "/Patient?_id=s0,s1,s2&_lastUpdated=lt2000-01-01", "").expect(t, http.StatusOK).json(t)); len(got) != 0 {
		t.Errorf("_lastUpdated=lt2000: %v", got)
	}
	cnt := c.do("GET", "/Patient?_id=s0,s1&_summary=count", "").expect(t, http.StatusOK).json(t)
	if fmt.Sprint(cnt["total"]) != "2" || len(entryList(get(cnt, "entry"))) != 0 {
		t.Errorf("_summary=count: %v", cnt)
	}
}

func testValidate(t *testing.T, c *client) {
	ok := c.do("POST", "/Patient/$validate", patientJSON("v", "Valid")).expect(t, http.StatusOK)
	if ok.outcome(t) != "informational" {
		t.Errorf("valid resource: %s", ok.body)
	}
	bad := c.do("POST", "/Patient/$validate", `{"resourceType":"Patient","birthDate":"1970-13-45"}`).expect(t, http.StatusOK)
	if code := bad.outcome(t); code == "informational" {
		t.Errorf("invalid resource reported as valid: %s", bad.body)
	}
	if !strings.Contains(string(bad.body), "birthDate") {
		t.Errorf("issue does not point at birthDate: %s", bad.body)
	}
	params := `{"resourceType":"Parameters","parameter":[{"name":"resource","resource":{"resourceType":"Patient","gender":"robot"}}]}`
	pb := c.do("POST", "/Patient/$validate", params).expect(t, http.StatusOK)
	if !strings.Contains(string(pb.body), "gender") {
		t.Errorf("Parameters input: %s", pb.body)
	}
	c.do("PUT", "/Patient/valinst", patientJSON("valinst", "Inst")).expect(t, http.StatusCreated)
	if code := c.do("POST", "/Patient/valinst/$validate", "").expect(t, http.StatusOK).outcome(t); code != "informational" {
		t.Errorf("instance $validate of the stored version: %s", code)
	}
	mism := c.do("POST", "/Patient/valinst/$validate", patientJSON("other", "X")).expect(t, http.StatusOK)
	if mism.outcome(t) == "informational" {
		t.Errorf("id mismatch not reported: %s", mism.body)
	}
	c.do("POST", "/Patient/nobody/$validate", "").expect(t, http.StatusNotFound)
}

func testMetadata(t *testing.T, c *client) {
	m := c.do("GET", "/metadata", "").expect(t, http.StatusOK).json(t)
	if m["resourceType"] != "CapabilityStatement" || m["fhirVersion"] != "4.0.1" {
		t.Fatalf("metadata: %v %v", m["resourceType"], m["fhirVersion"])
	}
	res := get(m, "rest", 0, "resource").([]any)
	if len(res) != 146 {
		t.Errorf("%d resource types, want the 146 of R4", len(res))
	}
	var patient map[string]any
	for _, r := range res {
		if get(r, "type") == "Patient" {
			patient = r.(map[string]any)
		}
	}
	var codes []string
	for _, i := range patient["interaction"].([]any) {
		codes = append(codes, get(i, "code").(string))
	}
	for _, want := range []string{"read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"} {
		if !strings.Contains(","+strings.Join(codes, ",")+",", ","+want+",") {
			t.Errorf("Patient interactions %v lack %s", codes, want)
		}
	}
	if strings.Contains(strings.Join(codes, ","), "transaction") {
		t.Errorf("claims an interaction without a route: %v", codes)
	}
	found := false
	for _, p := range patient["searchParam"].([]any) {
		if get(p, "name") == "family" && get(p, "type") == "string" {
			found = true
		}
	}
	if !found {
		t.Errorf("Patient searchParam lacks family")
	}
	if get(m, "rest", 0, "interaction", 0, "code") != "history-system" {
		t.Errorf("system interactions: %v", get(m, "rest", 0, "interaction"))
	}
}

func testNegotiation(t *testing.T, c *client) {
	c.do("PUT", "/Patient/neg", patientJSON("neg", "Neg")).expect(t, http.StatusCreated)
	cases := []struct {
		name   string
		path   string
		hdr    []string
		want   int
		ctype  string
		pretty bool
	}{
		{"default", "/Patient/neg", nil, 200, "application/fhir+json", false},
		{"accept fhir+json", "/Patient/neg", []string{"Accept: application/fhir+json"}, 200, "application/fhir+json", false},
		{"accept json", "/Patient/neg", []string{"Accept: application/json"}, 200, "application/json", false},
		{"accept any", "/Patient/neg", []string{"Accept: */*"}, 200, "application/fhir+json", false},
		{"accept xml", "/Patient/neg", []string{"Accept: application/fhir+xml"}, 406, "application/fhir+json", false},
		{"_format json", "/Patient/neg?_format=json", []string{"Accept: application/xml"}, 200, "application/fhir+json", false},
		{"_format fhir+json", "/Patient/neg?_format=application/fhir%2Bjson", nil, 200, "application/fhir+json", false},
		{"_format xml", "/Patient/neg?_format=xml", nil, 406, "application/fhir+json", false},
		{"_pretty", "/Patient/neg?_pretty=true", nil, 200, "application/fhir+json", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := c.do("GET", tc.path, "", tc.hdr...).expect(t, tc.want)
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
				t.Errorf("Content-Type %q, want %s", ct, tc.ctype)
			}
			if tc.want == 406 {
				r.outcome(t)
			}
			if got := strings.Contains(string(r.body), "\n  "); got != tc.pretty {
				t.Errorf("pretty %v, want %v", got, tc.pretty)
			}
		})
	}
}

// testConcurrentUpdates checks that writes racing on one resource are all
// kept as distinct versions (no lost update), and that If-Match lets only
// one of several writers based on the same version win.
func testConcurrentUpdates(t *testing.T, c *client) {
	c.do("PUT", "/Patient/race", patientJSON("race", "Start")).expect(t, http.StatusCreated)
	const n = 8
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			statuses[i] = c.do("PUT", "/Patient/race", patientJSON("race", fmt.Sprint("W", i))).status
		}(i)
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Errorf("writer %d: status %d", i, s)
		}
	}
	h := c.do("GET", "/Patient/race/_history?_count=100", "").expect(t, http.StatusOK).json(t)
	if got := len(entryList(get(h, "entry"))); got != n+1 {
		t.Errorf("%d versions after %d concurrent updates, want %d", got, n, n+1)
	}
	cur := c.do("GET", "/Patient/race", "").expect(t, http.StatusOK).header.Get("ETag")
	wins := 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			statuses[i] = c.do("PUT", "/Patient/race", patientJSON("race", fmt.Sprint("M", i)), "If-Match: "+cur).status
		}(i)
	}
	wg.Wait()
	for _, s := range statuses {
		switch s {
		case http.StatusOK:
			wins++
		case http.StatusPreconditionFailed:
		default:
			t.Errorf("If-Match writer: status %d", s)
		}
	}
	if wins != 1 {
		t.Errorf("%d If-Match writers won, want exactly 1", wins)
	}
}

func testErrors(t *testing.T, c *client) {
	c.do("PUT", "/Patient/err", patientJSON("err", "Err")).expect(t, http.StatusCreated)
	big := `{"resourceType":"Patient","name":[{"family":"` + strings.Repeat("x", 17<<20) + `"}]}`
	cases := []struct {
		name   string
		method string
		path   string
		body   string
		hdr    []string
		want   int
	}{
		{"unknown type", "GET", "/Foo/1", "", nil, 404},
		{"unknown type create", "POST", "/Foo", patientJSON("a", "b"), nil, 404},
		{"unknown route", "GET", "/Patient/err/_history/1/extra", "", nil, 404},
		{"unknown id", "GET", "/Patient/nobody", "", nil, 404},
		{"malformed id", "GET", "/Patient/bad_id!", "", nil, 404},
		{"non-numeric version", "GET", "/Patient/err/_history/abc", "", nil, 404},
		{"wrong method", "DELETE", "/metadata", "", nil, 405},
		{"wrong method on type", "PUT", "/Patient", patientJSON("a", "b"), nil, 405},
		{"xml body", "POST", "/Patient", "<Patient/>", []string{"Content-Type: application/fhir+xml"}, 415},
		{"form body", "POST", "/Patient", "a=b", []string{"Content-Type: application/x-www-form-urlencoded"}, 415},
		{"too large", "POST", "/Patient", big, nil, 413},
		{"malformed json", "POST", "/Patient", `{"resourceType":"Patient",`, nil, 400},
		{"empty body", "POST", "/Patient", " ", nil, 400},
		{"duplicate key", "POST", "/Patient", `{"resourceType":"Patient","active":true,"active":false}`, nil, 400},
		{"invalid element", "POST", "/Patient", `{"resourceType":"Patient","gender":"robot"}`, nil, 400},
		{"unknown element", "POST", "/Patient", `{"resourceType":"Patient","colour":"blue"}`, nil, 400},
		{"wrong type body", "POST", "/Observation", patientJSON("a", "b"), nil, 400},
		{"update without id", "PUT", "/Patient/err", `{"resourceType":"Patient"}`, nil, 400},
		{"update id mismatch", "PUT", "/Patient/err", patientJSON("other", "x"), nil, 400},
		{"update bad url id", "PUT", "/Patient/bad_id!", patientJSON("bad_id!", "x"), nil, 400},
		{"bad If-Match", "PUT", "/Patient/err", patientJSON("err", "x"), []string{"If-Match: soon"}, 400},
		{"bad _count", "GET", "/Patient?_count=many", "", nil, 400},
		{"bad _total", "GET", "/Patient?_total=maybe", "", nil, 400},
		{"bad cursor", "GET", "/Patient?_cursor=forged", "", nil, 400},
		{"xml accept", "GET", "/Patient/err", "", []string{"Accept: application/xml"}, 406},
		{"read deleted", "GET", "/Patient/err-deleted", "", nil, 410},
	}
	c.do("PUT", "/Patient/err-deleted", patientJSON("err-deleted", "D")).expect(t, http.StatusCreated)
	c.do("DELETE", "/Patient/err-deleted", "").expect(t, http.StatusNoContent)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.do(tc.method, tc.path, tc.body, tc.hdr...).expect(t, tc.want).outcome(t)
		})
	}
	// Nothing leaked through the failed writes.
	if v := get(c.do("GET", "/Patient/err", "").expect(t, http.StatusOK).json(t), "meta", "versionId"); v != "1" {
		t.Errorf("failed writes changed Patient/err: version %v", v)
	}
	// Health endpoints live outside the FHIR base.
	c.do("GET", c.root+"/healthz", "").expect(t, http.StatusOK)
	c.do("GET", c.root+"/readyz", "").expect(t, http.StatusOK)
}
