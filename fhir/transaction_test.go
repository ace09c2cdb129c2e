package fhir_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// syntheaBundles returns the Synthea transaction Bundles of testdata,
// smallest first.
func syntheaBundles(t testing.TB) [][]byte {
	t.Helper()
	files, err := filepath.Glob("../testdata/synthea/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Synthea bundles found: %v", err)
	}
	var out [][]byte
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, raw)
	}
	slices.SortFunc(out, func(a, b []byte) int { return len(a) - len(b) })
	return out
}

// nextLink returns the next link of a Bundle, "" when none.
func nextLink(b map[string]any) string {
	links, _ := b["link"].([]any)
	for _, l := range links {
		if get(l, "relation") == "next" {
			s, _ := get(l, "url").(string)
			return s
		}
	}
	return ""
}

func entries(b map[string]any) []any {
	es, _ := b["entry"].([]any)
	return es
}

// refsIn lists every Reference.reference string of a decoded resource.
func refsIn(v any, out []string) []string {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if s, ok := val.(string); ok && k == "reference" {
				out = append(out, s)
				continue
			}
			out = refsIn(val, out)
		}
	case []any:
		for _, val := range x {
			out = refsIn(val, out)
		}
	}
	return out
}

// TestTransactionSynthea posts Synthea Bundles as transactions and reads
// every resource back, checking that every urn:uuid reference became a
// reference to a stored resource.
func TestTransactionSynthea(t *testing.T) {
	bundles := syntheaBundles(t)
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			todo := bundles
			if be.name == "mongo" {
				todo = bundles[:1] // FerretDB scans every document: keep it small
			}
			c := newServer(t, be.open(t), nil)
			for _, raw := range todo {
				var in struct {
					Entry []struct {
						FullURL  string         `json:"fullUrl"`
						Resource map[string]any `json:"resource"`
					} `json:"entry"`
				}
				if err := json.Unmarshal(raw, &in); err != nil {
					t.Fatal(err)
				}
				r := c.do("POST", "", string(raw)).expect(t, http.StatusOK).json(t)
				if r["type"] != "transaction-response" {
					t.Fatalf("response type %v", r["type"])
				}
				out := entries(r)
				if len(out) != len(in.Entry) {
					t.Fatalf("%d response entries for %d entries", len(out), len(in.Entry))
				}
				// fullUrl -> the location the server assigned.
				stored := map[string]string{}
				for i, e := range out {
					if st := get(e, "response", "status"); st != "201 Created" {
						t.Fatalf("entry %d: status %v", i, st)
					}
					loc, _ := get(e, "response", "location").(string)
					rel := strings.TrimPrefix(loc, c.base+"/")
					typ, rest, _ := strings.Cut(rel, "/")
					id, _, _ := strings.Cut(rest, "/")
					if typ != in.Entry[i].Resource["resourceType"] || id == "" {
						t.Fatalf("entry %d: location %q for a %v", i, loc, in.Entry[i].Resource["resourceType"])
					}
					stored[in.Entry[i].FullURL] = typ + "/" + id
				}
				live := map[string]bool{}
				for _, ref := range stored {
					live[ref] = true
				}
				for i, e := range in.Entry {
					got := c.do("GET", "/"+stored[e.FullURL], "").expect(t, http.StatusOK)
					if strings.Contains(string(got.body), "urn:uuid:") {
						t.Fatalf("entry %d still holds a urn:uuid: %.300s", i, got.body)
					}
					res := got.json(t)
					want := refsIn(e.Resource, nil)
					have := refsIn(res, nil)
					if len(want) != len(have) {
						t.Fatalf("entry %d: %d references, want %d", i, len(have), len(want))
					}
					slices.Sort(have)
					for _, w := range want {
						if !strings.HasPrefix(w, "urn:uuid:") {
							continue
						}
						if !slices.Contains(have, stored[w]) || !live[stored[w]] {
							t.Fatalf("entry %d: reference %s was not rewritten to %s: %v", i, w, stored[w], have)
						}
					}
					if got := get(res, "meta", "versionId"); got != "1" {
						t.Fatalf("entry %d: versionId %v", i, got)
					}
				}
				t.Logf("transaction of %d entries stored and read back", len(in.Entry))
			}
		})
	}
}

// counter counts the Patients with a family name, through search.
func countFamily(t *testing.T, c *client, family string) int {
	t.Helper()
	b := c.do("GET", "/Patient?family="+family+"&_summary=count", "").expect(t, http.StatusOK).json(t)
	n, err := b["total"].(json.Number).Int64()
	if err != nil {
		t.Fatalf("total: %v", b["total"])
	}
	return int(n)
}

func bundleJSON(typ string, entries ...string) string {
	return `{"resourceType":"Bundle","type":"` + typ + `","entry":[` + strings.Join(entries, ",") + `]}`
}

func postEntry(fullURL, resource string) string {
	return fmt.Sprintf(`{"fullUrl":%q,"resource":%s,"request":{"method":"POST","url":%q}}`,
		fullURL, resource, resourceTypeOf(resource))
}

func resourceTypeOf(res string) string {
	var m struct {
		ResourceType string `json:"resourceType"`
	}
	_ = json.Unmarshal([]byte(res), &m)
	return m.ResourceType
}

func txObs(subject, code string) string {
	return fmt.Sprintf(`{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":%q}]},"subject":{"reference":%q},"valueQuantity":{"value":7,"unit":"score","system":"http://unitsofmeasure.org","code":"{score}"}}`, code, subject)
}

// TestTransactionAllOrNothing checks that a transaction with one bad entry
// writes nothing, whatever the failure.
func TestTransactionAllOrNothing(t *testing.T) {
	pat := `{"resourceType":"Patient","name":[{"family":"Rollback"}]}`
	good := []string{
		postEntry("urn:uuid:11111111-1111-4111-8111-111111111111", pat),
		postEntry("urn:uuid:22222222-2222-4222-8222-222222222222", txObs("urn:uuid:11111111-1111-4111-8111-111111111111", "72514-3")),
	}
	tests := []struct {
		name   string
		bad    string
		status int
		inMsg  string
	}{
		{"invalid resource", postEntry("urn:uuid:33333333-3333-4333-8333-333333333333", `{"resourceType":"Observation","status":"not-a-status","code":{"text":"x"}}`), http.StatusBadRequest, "entry 2"},
		{"unresolved urn:uuid", postEntry("urn:uuid:44444444-4444-4444-8444-444444444444", txObs("urn:uuid:99999999-9999-4999-8999-999999999999", "1")), http.StatusBadRequest, "names no entry"},
		{"If-Match on a missing resource", `{"resource":` + patientJSON("nope", "Rollback") + `,"request":{"method":"PUT","url":"Patient/nope","ifMatch":"W/\"3\""}}`, http.StatusPreconditionFailed, "entry 2"},
		{"conditional reference without match", postEntry("urn:uuid:55555555-5555-4555-8555-555555555555", txObs("Patient?identifier=urn:x|missing", "1")), http.StatusPreconditionFailed, "matches 0"},
		{"same criteria twice", `{"resource":{"resourceType":"Patient","identifier":[{"system":"urn:x","value":"1"}],"name":[{"family":"Rollback"}]},"request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=urn:x|1"}},{"resource":{"resourceType":"Patient","name":[{"family":"Rollback"}]},"request":{"method":"PUT","url":"Patient?identifier=urn:x|1"}}`, http.StatusBadRequest, "criteria"},
		{"same resource twice", `{"resource":` + patientJSON("twice", "Rollback") + `,"request":{"method":"PUT","url":"Patient/twice"}},{"resource":` + patientJSON("twice", "Rollback") + `,"request":{"method":"PUT","url":"Patient/twice"}}`, http.StatusBadRequest, "once"},
		{"unknown type", `{"request":{"method":"DELETE","url":"Nonsense/1"}}`, http.StatusNotFound, "Nonsense"},
		{"null resource", `{"resource":null,"request":{"method":"POST","url":"Patient"}}`, http.StatusBadRequest, "entry 2"},
		{"no request", `{"resource":{"resourceType":"Patient"}}`, http.StatusBadRequest, "entry.request"},
		{"bad ifMatch", `{"resource":` + patientJSON("x", "Rollback") + `,"request":{"method":"PUT","url":"Patient/x","ifMatch":"soon"}}`, http.StatusBadRequest, "ifMatch"},
		{"wrong type in body", `{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Observation"}}`, http.StatusBadRequest, "entry 2"},
		{"bad patch", `{"resource":{"resourceType":"Binary","contentType":"application/json-patch+json","data":"!!"},"request":{"method":"PATCH","url":"Patient/x"}}`, http.StatusBadRequest, "base64"},
		{"bad method", `{"request":{"method":"BREW","url":"Patient/1"}}`, http.StatusBadRequest, "BREW"},
	}
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			before := len(entries(c.do("GET", "/_history", "").expect(t, http.StatusOK).json(t)))
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					r := c.do("POST", "", bundleJSON("transaction", append(slices.Clone(good), tt.bad)...)).expect(t, tt.status)
					r.outcome(t)
					if !strings.Contains(string(r.body), tt.inMsg) {
						t.Errorf("outcome does not mention %q: %s", tt.inMsg, r.body)
					}
					if n := countFamily(t, c, "Rollback"); n != 0 {
						t.Fatalf("%d Patients left behind", n)
					}
					if n := len(entries(c.do("GET", "/_history", "").expect(t, http.StatusOK).json(t))); n != before {
						t.Fatalf("history grew from %d to %d", before, n)
					}
				})
			}
			// The same Bundle without the bad entry goes through.
			c.do("POST", "", bundleJSON("transaction", good...)).expect(t, http.StatusOK)
			if n := countFamily(t, c, "Rollback"); n != 1 {
				t.Fatalf("%d Patients after the good transaction", n)
			}
		})
	}
}

// TestTransactionSemantics covers conditional entries, processing order
// and GET entries reading the transaction's own writes.
func TestTransactionSemantics(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			ident := `"identifier":[{"system":"urn:mrn","value":"M-1"}]`
			c.do("PUT", "/Patient/old", patientJSON("old", "Gone")).expect(t, http.StatusCreated)
			c.do("PUT", "/Patient/keep", patientJSON("keep", "Kept")).expect(t, http.StatusCreated)
			tx := bundleJSON("transaction",
				// GET first in the Bundle, evaluated last.
				`{"request":{"method":"GET","url":"Patient?identifier=urn:mrn|M-1"}}`,
				`{"fullUrl":"urn:uuid:aaaaaaaa-0000-4000-8000-000000000001","resource":{"resourceType":"Patient",`+ident+`,"name":[{"family":"Cond"}]},"request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=urn:mrn|M-1"}}`,
				postEntry("urn:uuid:aaaaaaaa-0000-4000-8000-000000000002", txObs("urn:uuid:aaaaaaaa-0000-4000-8000-000000000001", "72514-3")),
				`{"request":{"method":"DELETE","url":"Patient/old"}}`,
				`{"resource":`+patientJSON("keep", "Kept2")+`,"request":{"method":"PUT","url":"Patient/keep","ifMatch":"W/\"1\""}}`,
				`{"request":{"method":"DELETE","url":"Patient?family=NoSuchFamily"}}`,
			)
			r := c.do("POST", "", tx).expect(t, http.StatusOK).json(t)
			es := entries(r)
			wantStatus := []string{"200 OK", "201 Created", "201 Created", "204 No Content", "200 OK", "204 No Content"}
			for i, w := range wantStatus {
				if got := get(es[i], "response", "status"); got != w {
					t.Errorf("entry %d: status %v, want %s", i, got, w)
				}
			}
			if n := len(entries(get(es[0], "resource").(map[string]any))); n != 1 {
				t.Errorf("GET entry did not see the transaction's write: %d matches", n)
			}
			pid := strings.TrimPrefix(fmt.Sprint(get(es[1], "fullUrl")), c.base+"/Patient/")
			obs := c.do("GET", strings.TrimPrefix(fmt.Sprint(get(es[2], "response", "location")), c.base), "").expect(t, http.StatusOK).json(t)
			if got := get(obs, "subject", "reference"); got != "Patient/"+pid {
				t.Errorf("Observation.subject %v, want Patient/%s", got, pid)
			}
			c.do("GET", "/Patient/old", "").expect(t, http.StatusGone)
			if v := get(c.do("GET", "/Patient/keep", "").expect(t, http.StatusOK).json(t), "meta", "versionId"); v != "2" {
				t.Errorf("Patient/keep version %v", v)
			}

			// Replaying the same transaction (a client retrying after a
			// timeout) does not create the Patient again, and a conditional
			// reference finds it.
			tx2 := bundleJSON("transaction",
				`{"fullUrl":"urn:uuid:aaaaaaaa-0000-4000-8000-000000000001","resource":{"resourceType":"Patient",`+ident+`,"name":[{"family":"Cond"}]},"request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=urn:mrn|M-1"}}`,
				postEntry("urn:uuid:aaaaaaaa-0000-4000-8000-000000000003", txObs("Patient?identifier=urn:mrn|M-1", "1111-1")),
			)
			r2 := c.do("POST", "", tx2).expect(t, http.StatusOK).json(t)
			if st := get(entries(r2)[0], "response", "status"); st != "200 OK" {
				t.Errorf("replayed conditional create: %v", st)
			}
			if n := countFamily(t, c, "Cond"); n != 1 {
				t.Errorf("%d Cond patients after replay", n)
			}
			obs2 := c.do("GET", strings.TrimPrefix(fmt.Sprint(get(entries(r2)[1], "response", "location")), c.base), "").expect(t, http.StatusOK).json(t)
			if got := get(obs2, "subject", "reference"); got != "Patient/"+pid {
				t.Errorf("conditional reference became %v, want Patient/%s", got, pid)
			}

			// PATCH entry with a Binary JSON Patch; Prefer: return=representation.
			patch := base64.StdEncoding.EncodeToString([]byte(`[{"op":"replace","path":"/active","value":false}]`))
			r3 := c.do("POST", "", bundleJSON("transaction",
				`{"resource":{"resourceType":"Binary","contentType":"application/json-patch+json","data":"`+patch+`"},"request":{"method":"PATCH","url":"Patient/keep"}}`,
			), "Prefer: return=representation").expect(t, http.StatusOK).json(t)
			if got := get(entries(r3)[0], "resource", "active"); got != false {
				t.Errorf("patched resource: active=%v", got)
			}
		})
	}
}

// TestBatch checks that batch entries are independent.
func TestBatch(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			b := bundleJSON("batch",
				`{"resource":`+patientJSON("b1", "Batch")+`,"request":{"method":"PUT","url":"Patient/b1"}}`,
				`{"resource":{"resourceType":"Patient","gender":"not-a-gender"},"request":{"method":"POST","url":"Patient"}}`,
				`{"request":{"method":"GET","url":"Patient/b1"}}`,
				`{"request":{"method":"GET","url":"Patient/missing"}}`,
				`{"request":{"method":"BREW","url":"Patient"}}`,
				`{"resource":{"resourceType":"Patient","name":[{"family":"Batch"}]},"request":{"method":"POST","url":"Patient"}}`,
				`{"resource":{"resourceType":"Binary","contentType":"application/json-patch+json","data":"`+base64.StdEncoding.EncodeToString([]byte(`[{"op":"replace","path":"/active","value":false}]`))+`"},"request":{"method":"PATCH","url":"Patient/b1"}}`,
				`{"resource":{"resourceType":"Binary","contentType":"text/plain","data":"eA=="},"request":{"method":"PATCH","url":"Patient/b1"}}`,
			)
			r := c.do("POST", "", b).expect(t, http.StatusOK).json(t)
			if r["type"] != "batch-response" {
				t.Fatalf("type %v", r["type"])
			}
			want := []string{"201", "400", "200", "404", "400", "201", "200", "415"}
			es := entries(r)
			if len(es) != len(want) {
				t.Fatalf("%d entries", len(es))
			}
			for i, w := range want {
				if got := fmt.Sprint(get(es[i], "response", "status")); !strings.HasPrefix(got, w) {
					t.Errorf("entry %d: status %s, want %s", i, got, w)
				}
			}
			if get(es[1], "response", "outcome", "resourceType") != "OperationOutcome" {
				t.Errorf("failed entry without outcome: %v", es[1])
			}
			if get(es[2], "resource", "id") != "b1" {
				t.Errorf("GET entry resource: %v", get(es[2], "resource"))
			}
			if v := get(c.do("GET", "/Patient/b1", "").expect(t, http.StatusOK).json(t), "active"); v != false {
				t.Errorf("batch PATCH not applied: active=%v", v)
			}
			if n := countFamily(t, c, "Batch"); n != 2 {
				t.Errorf("%d Batch patients, want 2", n)
			}
			// The base with a trailing slash is the same endpoint.
			if r := c.do("POST", "/", bundleJSON("batch", `{"request":{"method":"GET","url":"Patient/b1"}}`)).expect(t, http.StatusOK).json(t); r["type"] != "batch-response" {
				t.Errorf("POST base/: %v", r["type"])
			}
			c.do("POST", "", bundleJSON("collection")).expect(t, http.StatusBadRequest).outcome(t)
			c.do("POST", "", `{"resourceType":"Patient"}`).expect(t, http.StatusBadRequest).outcome(t)
			c.do("POST", "", `{"resourceType":`).expect(t, http.StatusBadRequest).outcome(t)
		})
	}
}

// TestConditionalWrites covers If-None-Exist, PUT and DELETE by search
// and their 0/1/many outcomes.
func TestConditionalWrites(t *testing.T) {
	withIdent := func(v, family string) string {
		return `{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"` + v + `"}],"name":[{"family":"` + family + `"}]}`
	}
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			// Conditional update: 0 matches creates, 1 match updates.
			r := c.do("PUT", "/Patient?identifier=urn:mrn|C-1", withIdent("C-1", "Up")).expect(t, http.StatusCreated)
			id := r.json(t)["id"].(string)
			r = c.do("PUT", "/Patient?identifier=urn:mrn|C-1", withIdent("C-1", "Up2")).expect(t, http.StatusOK)
			if r.json(t)["id"] != id || get(r.json(t), "meta", "versionId") != "2" {
				t.Errorf("conditional update: %s", r.body)
			}
			// If-None-Exist: a match answers 200 with the existing resource.
			r = c.do("POST", "/Patient", withIdent("C-1", "Other"), "If-None-Exist: identifier=urn:mrn|C-1").expect(t, http.StatusOK)
			if r.json(t)["id"] != id {
				t.Errorf("If-None-Exist match returned %s", r.body)
			}
			// Two resources with the same identifier: many matches is 412.
			c.do("POST", "/Patient", withIdent("C-1", "Dup")).expect(t, http.StatusCreated)
			c.do("PUT", "/Patient?identifier=urn:mrn|C-1", withIdent("C-1", "X")).expect(t, http.StatusPreconditionFailed).outcome(t)
			c.do("POST", "/Patient", withIdent("C-1", "X"), "If-None-Exist: identifier=urn:mrn|C-1").expect(t, http.StatusPreconditionFailed)
			c.do("DELETE", "/Patient?identifier=urn:mrn|C-1", "").expect(t, http.StatusPreconditionFailed)
			// Conditional delete of a single match.
			c.do("DELETE", "/Patient?family=Dup", "").expect(t, http.StatusNoContent)
			c.do("DELETE", "/Patient?identifier=urn:mrn|C-1", "").expect(t, http.StatusNoContent)
			c.do("GET", "/Patient/"+id, "").expect(t, http.StatusGone)
			c.do("DELETE", "/Patient?identifier=urn:mrn|C-1", "").expect(t, http.StatusNoContent) // 0 matches
			// Criteria the server would ignore are refused, not widened.
			c.do("DELETE", "/Patient?no-such-param=1", "").expect(t, http.StatusBadRequest).outcome(t)
			c.do("DELETE", "/Patient", "").expect(t, http.StatusMethodNotAllowed).outcome(t)
			c.do("DELETE", "/Patient?_format=json", "").expect(t, http.StatusBadRequest).outcome(t)
			c.do("PUT", "/Patient?identifier=urn:mrn|C-9", `{"resourceType":"Patient","id":"c9","identifier":[{"system":"urn:mrn","value":"C-9"}]}`).expect(t, http.StatusCreated)
			c.do("GET", "/Patient/c9", "").expect(t, http.StatusOK)
			c.do("PUT", "/Patient?identifier=urn:mrn|C-9", `{"resourceType":"Patient","id":"other","identifier":[{"system":"urn:mrn","value":"C-9"}]}`).expect(t, http.StatusBadRequest)
		})
	}
}

// TestConcurrentConditionalCreate: an RPM hub posts the same reading from
// several connections at once; exactly one resource is created.
func TestConcurrentConditionalCreate(t *testing.T) {
	reading := `{"resourceType":"Observation","identifier":[{"system":"urn:rpm:hub","value":"reading-42"}],"status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"valueQuantity":{"value":71,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}`
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			const n = 8
			var wg sync.WaitGroup
			statuses := make([]int, n)
			ids := make([]string, n)
			start := make(chan struct{})
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					r := c.do("POST", "/Observation", reading, "If-None-Exist: identifier=urn:rpm:hub|reading-42")
					statuses[i] = r.status
					if r.status < 300 {
						ids[i], _ = r.json(t)["id"].(string)
					}
				}()
			}
			close(start)
			wg.Wait()
			created := 0
			for i, st := range statuses {
				switch st {
				case http.StatusCreated:
					created++
				case http.StatusOK:
				default:
					t.Errorf("request %d: status %d", i, st)
				}
				if ids[i] != ids[0] {
					t.Errorf("request %d got id %q, request 0 %q", i, ids[i], ids[0])
				}
			}
			if created != 1 {
				t.Errorf("%d creates, want exactly 1 (statuses %v)", created, statuses)
			}
			b := c.do("GET", "/Observation?identifier=urn:rpm:hub|reading-42&_summary=count", "").expect(t, http.StatusOK).json(t)
			if fmt.Sprint(b["total"]) != "1" {
				t.Errorf("%v stored readings", b["total"])
			}
		})
	}
}

// TestHistorySync follows _history?_since page by page while other writes
// happen, and checks that each pass holds every change (deletions too)
// exactly once and that the next pass, from the Bundle's lastUpdated,
// catches what was written meanwhile.
func TestHistorySync(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			c.do("GET", "/Patient/never/_history", "").expect(t, http.StatusNotFound).outcome(t)
			since := time.Now().UTC().Add(-time.Second).Format(time.RFC3339Nano)
			var mu sync.Mutex
			written := map[string]bool{} // "Patient/id/version"
			write := func(method, id string, version int) {
				body := ""
				if method == "PUT" {
					body = patientJSON(id, "Sync")
				}
				r := c.do(method, "/Patient/"+id, body)
				if r.status >= 300 {
					t.Errorf("%s %s: %d %s", method, id, r.status, r.body)
					return
				}
				mu.Lock()
				written[fmt.Sprintf("Patient/%s/%d", id, version)] = true
				mu.Unlock()
			}
			for i := range 20 {
				write("PUT", fmt.Sprint("s", i), 1)
			}
			for i := range 5 {
				write("PUT", fmt.Sprint("s", i), 2)
				write("DELETE", fmt.Sprint("s", i), 3)
			}
			pass := func(from string, during func(page int)) (map[string]bool, string) {
				seen := map[string]bool{}
				next := "/Patient/_history?_count=4&_since=" + url.QueryEscape(from)
				sync := ""
				for page := 0; next != ""; page++ {
					b := c.do("GET", next, "").expect(t, http.StatusOK).json(t)
					sync, _ = get(b, "meta", "lastUpdated").(string)
					for _, e := range entries(b) {
						loc := fmt.Sprint(get(e, "response", "location"))
						key := strings.Replace(loc, "/_history/", "/", 1)
						if seen[key] {
							t.Fatalf("%s twice in one pass", key)
						}
						seen[key] = true
					}
					if during != nil {
						during(page)
					}
					next = nextLink(b)
				}
				return seen, sync
			}
			before := map[string]bool{}
			for k := range written {
				before[k] = true
			}
			first, syncPoint := pass(since, func(page int) {
				if page < 3 {
					write("PUT", fmt.Sprint("late", page), 1)
					write("PUT", fmt.Sprint("s", 10+page), 2)
				}
			})
			for k := range before {
				if !first[k] {
					t.Errorf("first pass misses %s", k)
				}
			}
			second, _ := pass(syncPoint, nil)
			for k := range written {
				if !first[k] && !second[k] {
					t.Errorf("%s missed by both passes", k)
				}
			}
			if !first["Patient/s0/3"] {
				t.Errorf("the deletion of s0 is not in the feed")
			}
			t.Logf("first pass %d versions, second %d, written %d", len(first), len(second), len(written))
		})
	}
}

// TestEverything loads a Synthea patient and reads it back through
// $everything page by page.
func TestEverything(t *testing.T) {
	raw := syntheaBundles(t)[0]
	var in struct {
		Entry []struct {
			Resource map[string]any `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		t.Fatal(err)
	}
	byType := map[string]int{}
	for _, e := range in.Entry {
		byType[e.Resource["resourceType"].(string)]++
	}
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			r := c.do("POST", "", string(raw)).expect(t, http.StatusOK).json(t)
			pid := ""
			for _, e := range entries(r) {
				if loc := fmt.Sprint(get(e, "response", "location")); strings.Contains(loc, "/Patient/") {
					pid = strings.Split(strings.TrimPrefix(loc, c.base+"/Patient/"), "/")[0]
				}
			}
			// Another patient's data must not leak in.
			other := c.do("POST", "/Patient", patientJSON("x", "Other")).expect(t, http.StatusCreated).json(t)["id"].(string)
			c.do("POST", "/Observation", txObs("Patient/"+other, "1")).expect(t, http.StatusCreated)

			got := map[string]int{}
			seen := map[string]bool{}
			next := "/Patient/" + pid + "/$everything?_count=40"
			for next != "" {
				b := c.do("GET", next, "").expect(t, http.StatusOK).json(t)
				if fmt.Sprint(b["total"]) != fmt.Sprint(len(in.Entry)) {
					t.Fatalf("total %v, want %d", b["total"], len(in.Entry))
				}
				for _, e := range entries(b) {
					u := fmt.Sprint(get(e, "fullUrl"))
					if seen[u] {
						t.Fatalf("%s twice", u)
					}
					seen[u] = true
					got[fmt.Sprint(get(e, "resource", "resourceType"))]++
				}
				next = nextLink(b)
			}
			for typ, n := range byType {
				if got[typ] != n {
					t.Errorf("%s: %d in $everything, %d in the Bundle", typ, got[typ], n)
				}
			}
			b := c.do("GET", "/Patient/"+pid+"/$everything?_type=Encounter,Practitioner", "").expect(t, http.StatusOK).json(t)
			if fmt.Sprint(b["total"]) != fmt.Sprint(byType["Encounter"]+byType["Practitioner"]) {
				t.Errorf("_type filter: total %v", b["total"])
			}
			future := url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
			if b := c.do("GET", "/Patient/"+pid+"/$everything?_since="+future, "").expect(t, http.StatusOK).json(t); fmt.Sprint(b["total"]) != "0" {
				t.Errorf("_since in the future: total %v", b["total"])
			}
			c.do("GET", "/Patient/nobody/$everything", "").expect(t, http.StatusNotFound)
			c.do("GET", "/Observation/x/$everything", "").expect(t, http.StatusNotFound)
			c.do("GET", "/Patient/"+pid+"/$everything?start=yesterday", "").expect(t, http.StatusBadRequest)
		})
	}
}

// TestCapabilityAdvertisesSync checks that the statement claims what works.
func TestCapabilityAdvertisesSync(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			cs := c.do("GET", "/metadata", "").expect(t, http.StatusOK).json(t)
			var sys []string
			for _, i := range get(cs, "rest", 0, "interaction").([]any) {
				sys = append(sys, fmt.Sprint(get(i, "code")))
			}
			if !slices.Contains(sys, "transaction") || !slices.Contains(sys, "batch") {
				t.Errorf("system interactions %v", sys)
			}
			for _, r := range get(cs, "rest", 0, "resource").([]any) {
				if get(r, "type") != "Patient" {
					continue
				}
				if get(r, "conditionalCreate") != true || get(r, "conditionalUpdate") != true || get(r, "conditionalDelete") != "single" {
					t.Errorf("conditional flags: %v %v %v", get(r, "conditionalCreate"), get(r, "conditionalUpdate"), get(r, "conditionalDelete"))
				}
				found := false
				for _, op := range get(r, "operation").([]any) {
					found = found || get(op, "name") == "everything"
				}
				if !found {
					t.Errorf("Patient does not list $everything")
				}
			}
		})
	}
}
