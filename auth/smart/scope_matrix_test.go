package smart_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/anodyne-fhir/anodyne/auth/smart"
)

// mxCase is one (scope form, path) cell of the enforcement matrix.
type mxCase struct {
	form, path string // matrix coordinates, for the report and the test name
	token      string
	method     string
	url        string
	body       any
	hdr        map[string]string
	status     int      // exact status expected
	want       []string // exact set of resources returned ("Type/id"), nil: none
	total      int      // Bundle.total when >= 0
	entries    []int    // batch/transaction: the status of each entry response
	allowed    bool
	bodyless   bool // the answer must carry no body (u without r)
	next       int  // Bundle next link: 0 unchecked, 1 wanted, 2 forbidden (the last page)
}

func (c mxCase) name() string {
	v := "denied"
	if c.allowed {
		v = "allowed"
	}
	return fmt.Sprintf("%s/%s/%s", c.form, c.path, v)
}

// mxDo sends one request with a token and optional headers; the body is
// JSON unless it is a string.
func (e *env) mxDo(t *testing.T, method, path, token string, body any, hdr map[string]string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	ctype := "application/fhir+json"
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
		ctype = "application/json-patch+json"
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, e.fhirBase+path, rd)
	req.Header.Set("Accept", "application/fhir+json")
	if rd != nil {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

// entryStatuses returns the HTTP status of each entry response of a
// batch/transaction-response Bundle.
func entryStatuses(b map[string]any) []int {
	var out []int
	for _, en := range entryList(b) {
		r, _ := en.(map[string]any)["response"].(map[string]any)
		s, _ := r["status"].(string)
		var n int
		fmt.Sscanf(s, "%d", &n)
		out = append(out, n)
	}
	return out
}

// TestScopeMatrix is the enforcement matrix of issue 4: for each scope
// form (SMART v1, v2 letters, query-limited, wildcards, user/ with
// fhirUser, system/) and each path a resource enters or leaves by, an
// allowed case whose returned data is exactly the expected set, and a
// denied case (403 OperationOutcome with no resource, or the outside data
// omitted from ids, totals, includes and entry responses).
//
// Single-resource rule: a resource that exists but is outside the grant
// answers 403 on every single-resource path (read, vread, instance
// history, $everything, $validate, update, patch, delete); searches and
// lists omit it.
func TestScopeMatrix(t *testing.T) {
	e := newEnv(t)
	e.seed()
	vital := "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
	e.addClient(smart.Client{ID: "mx", Type: smart.ClientPublic, RedirectURIs: []string{redirect},
		Scopes: "openid fhirUser launch/patient patient/*.cruds patient/*.read user/*.cruds " + vital}, "")
	e.addAccount("doc", "Practitioner/p1", "a", "b")
	e.addAccount("beta", "Patient/b")
	sys := newSigner(t, jose.ES384)
	e.addClient(smart.Client{ID: "mxsys", Type: smart.ClientAsymmetric, JWKS: sys.jwks(), Scopes: "system/*.cruds"}, "")
	root := e.backendToken("mxsys", sys, "system/*.cruds")
	// More of patient b's data, so that every path has something to leak.
	for _, r := range []map[string]any{
		// a-panel is patient a's, but points at patient b's data.
		{"resourceType": "Observation", "id": "a-panel", "status": "final", "subject": map[string]any{"reference": "Patient/a"}, "code": map[string]any{"text": "panel"},
			"hasMember": []any{map[string]any{"reference": "Observation/b-vital"}}},
		{"resourceType": "Practitioner", "id": "p1", "name": []any{map[string]any{"family": "Doc"}}},
		{"resourceType": "Practitioner", "id": "p2", "name": []any{map[string]any{"family": "Other"}}},
		{"resourceType": "Condition", "id": "b-cond", "subject": map[string]any{"reference": "Patient/b"}, "code": map[string]any{"text": "asthma"}},
		{"resourceType": "Observation", "id": "b-lab", "status": "final", "subject": map[string]any{"reference": "Patient/b"}, "code": map[string]any{"text": "creatinine"},
			"category": []any{map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}}}}},
	} {
		if st, body := e.mxDo(t, "PUT", fmt.Sprintf("/%s/%s", r["resourceType"], r["id"]), root, r, nil); st != 201 {
			t.Fatalf("seed: %d %v", st, body)
		}
	}
	tok := map[string]string{
		"v1-patient-type": e.mxToken(t, "doc", "a", "launch/patient", "patient/Observation.read", "patient/Patient.read"),
		"v1-patient-*":    e.mxToken(t, "doc", "a", "launch/patient", "patient/*.read"),
		"v1-user-*":       e.mxToken(t, "doc", "", "user/*.*"),
		"v1-system-write": e.backendToken("mxsys", sys, "system/*.write"),
		"v2-rs":           e.mxToken(t, "doc", "a", "launch/patient", "patient/Observation.rs"),
		"v2-c":            e.mxToken(t, "doc", "a", "launch/patient", "patient/Observation.c"),
		"v2-u":            e.mxToken(t, "doc", "a", "launch/patient", "patient/Observation.u"),
		"v2-d":            e.mxToken(t, "doc", "a", "launch/patient", "patient/Observation.d"),
		"v2-s":            e.mxToken(t, "doc", "a", "launch/patient", "patient/Observation.s"),
		"v2-r":            e.mxToken(t, "doc", "a", "launch/patient", "patient/Observation.r"),
		"v2-query":        e.mxToken(t, "doc", "a", "launch/patient", vital),
		"v2-wildcard":     e.mxToken(t, "doc", "a", "launch/patient", "patient/*.cruds"),
		"user-fhirUser":   e.mxToken(t, "beta", "", "user/*.cruds"),
		"system-rs":       e.backendToken("mxsys", sys, "system/*.rs"),
		"fhirUser-scope":  e.mxToken(t, "doc", "", "openid", "fhirUser", "user/Observation.rs"),
	}
	cases := matrixCases()
	forms, paths := map[string]bool{}, map[string]bool{}
	var allowed, denied int
	for _, c := range cases {
		forms[c.form], paths[c.path] = true, true
		if c.allowed {
			allowed++
		} else {
			denied++
		}
		t.Run(c.name(), func(t *testing.T) {
			token, ok := tok[c.token]
			if !ok {
				t.Fatalf("no token %q", c.token)
			}
			st, body := e.mxDo(t, c.method, c.url, token, c.body, c.hdr)
			if st != c.status {
				t.Fatalf("%s %s: status %d, want %d: %v", c.method, c.url, st, c.status, body)
			}
			if st == http.StatusForbidden && body["resourceType"] != "OperationOutcome" {
				t.Errorf("403 without an OperationOutcome: %v", body)
			}
			if c.method == "GET" || c.want != nil || st == http.StatusForbidden {
				got := returned(body)
				want := slices.Clone(c.want)
				slices.Sort(want)
				if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
					t.Errorf("returned %v, want %v", got, want)
				}
			}
			if c.total >= 0 && body["resourceType"] == "Bundle" {
				n, _ := body["total"].(float64)
				if _, has := body["total"]; !has || int(n) != c.total {
					t.Errorf("total %v, want %d", body["total"], c.total)
				}
			}
			if c.next != 0 && body["resourceType"] == "Bundle" {
				has := false
				links, _ := body["link"].([]any)
				for _, l := range links {
					if lm, _ := l.(map[string]any); lm["relation"] == "next" {
						has = true
					}
				}
				if has != (c.next == 1) {
					t.Errorf("next link present %v, want %v: %v", has, c.next == 1, links)
				}
			}
			if c.bodyless && len(body) != 0 {
				t.Errorf("a body was returned: %v", body)
			}
			if c.entries != nil {
				if got := entryStatuses(body); !slices.Equal(got, c.entries) {
					t.Errorf("entry statuses %v, want %v", got, c.entries)
				}
			}
		})
	}
	t.Logf("matrix: %d scope forms x %d paths, %d cells (%d allowed, %d denied)", len(forms), len(paths), len(cases), allowed, denied)
}

// mxToken runs a standalone launch with the mx client; pick is the
// patient chosen in the picker (practitioner with launch/patient).
func (e *env) mxToken(t *testing.T, user, pick string, scopes ...string) string {
	t.Helper()
	if pick == "" {
		pick = "a"
	}
	return e.launchToken(t, "mx", user, pick, scopes...)
}

func allow(form, path, token, method, url string, body any, status int, want ...string) mxCase {
	return mxCase{form: form, path: path, token: token, method: method, url: url, body: body, status: status, want: want, total: -1, allowed: true}
}

func deny(form, path, token, method, url string, body any, status int, want ...string) mxCase {
	return mxCase{form: form, path: path, token: token, method: method, url: url, body: body, status: status, want: want, total: -1}
}

func (c mxCase) tot(n int) mxCase        { c.total = n; return c }
func (c mxCase) ents(s ...int) mxCase    { c.entries = s; return c }
func (c mxCase) with(k, v string) mxCase { c.hdr = map[string]string{k: v}; return c }
func (c mxCase) named(p string) mxCase   { c.path = p; return c }
func (c mxCase) noBody() mxCase          { c.bodyless = true; return c }
func (c mxCase) more() mxCase            { c.next = 1; return c }
func (c mxCase) nothing() mxCase         { c.want = []string{}; return c }
func (c mxCase) last() mxCase            { c.next = 2; return c }
func obsBody(id, patient string) map[string]any {
	o := map[string]any{"resourceType": "Observation", "status": "final", "code": map[string]any{"text": "creatinine"}, "subject": map[string]any{"reference": "Patient/" + patient},
		"category": []any{map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}}}}}
	if id != "" {
		o["id"] = id
	}
	return o
}

func getBatch(typ string, urls ...string) map[string]any {
	var entries []any
	for _, u := range urls {
		entries = append(entries, map[string]any{"request": map[string]any{"method": "GET", "url": u}})
	}
	return map[string]any{"resourceType": "Bundle", "type": typ, "entry": entries}
}

func createTx(patients ...string) map[string]any {
	var entries []any
	for _, p := range patients {
		entries = append(entries, map[string]any{"resource": obsBody("", p), "request": map[string]any{"method": "POST", "url": "Observation"}})
	}
	return map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": entries}
}

// matrixCases lists the cells. Reads come first and writes last, so that
// the data every read expects is the seeded one.
func matrixCases() []mxCase {
	const (
		aVital, aLab, aPanel = "Observation/a-vital", "Observation/a-lab", "Observation/a-panel"
		bVital, bLab         = "Observation/b-vital", "Observation/b-lab"
		aCond, bCond         = "Condition/a-cond", "Condition/b-cond"
		pa, pb               = "Patient/a", "Patient/b"
	)
	patch := `[{"op":"replace","path":"/status","value":"final"}]`
	return []mxCase{
		// read
		allow("v1 patient/Observation.read", "read", "v1-patient-type", "GET", "/Observation/a-vital", nil, 200, aVital),
		deny("v1 patient/Observation.read", "read", "v1-patient-type", "GET", "/Observation/b-vital", nil, 403),
		allow("v1 patient/*.read", "read", "v1-patient-*", "GET", "/Condition/a-cond", nil, 200, aCond),
		deny("v1 patient/*.read", "read", "v1-patient-*", "GET", "/Condition/b-cond", nil, 403),
		allow("v1 user/*.*", "read", "v1-user-*", "GET", "/Condition/b-cond", nil, 200, bCond),
		deny("v1 user/*.*", "read", "v1-user-*", "GET", "/AuditEvent", nil, 403),
		deny("v1 system/*.write", "read", "v1-system-write", "GET", "/Observation/a-vital", nil, 403),
		allow("v2 .rs", "read", "v2-rs", "GET", "/Observation/a-lab", nil, 200, aLab),
		deny("v2 .rs", "read", "v2-rs", "GET", "/Observation/b-lab", nil, 403),
		allow("v2 .r", "read", "v2-r", "GET", "/Observation/a-vital", nil, 200, aVital),
		deny("v2 .s", "read", "v2-s", "GET", "/Observation/a-vital", nil, 403),
		deny("v2 .c", "read", "v2-c", "GET", "/Observation/a-vital", nil, 403),
		allow("v2 query", "read", "v2-query", "GET", "/Observation/a-vital", nil, 200, aVital),
		deny("v2 query", "read", "v2-query", "GET", "/Observation/a-lab", nil, 403),
		allow("v2 patient/*.cruds", "read", "v2-wildcard", "GET", "/Patient/a", nil, 200, pa),
		deny("v2 patient/*.cruds", "read", "v2-wildcard", "GET", "/Patient/b", nil, 403),
		allow("user/ with fhirUser", "read", "user-fhirUser", "GET", "/Patient/b", nil, 200, pb),
		deny("user/ with fhirUser", "read", "user-fhirUser", "GET", "/Observation/a-vital", nil, 403),
		allow("system/*.rs", "read", "system-rs", "GET", "/Observation/b-vital", nil, 200, bVital),
		deny("system/*.rs", "read", "system-rs", "GET", "/AuditEvent", nil, 403),
		// the fhirUser resource is readable with the token (SMART App Launch), nothing more
		allow("user/ with fhirUser scope", "read", "fhirUser-scope", "GET", "/Practitioner/p1", nil, 200, "Practitioner/p1"),
		deny("user/ with fhirUser scope", "read", "fhirUser-scope", "GET", "/Practitioner/p2", nil, 403),
		deny("user/ with fhirUser scope", "type search", "fhirUser-scope", "GET", "/Practitioner", nil, 403),
		deny("user/ with fhirUser", "read", "user-fhirUser", "GET", "/Practitioner/p1", nil, 403).named("read (no fhirUser scope, no Practitioner scope)"),
		// vread
		allow("v1 patient/Observation.read", "vread", "v1-patient-type", "GET", "/Observation/a-vital/_history/1", nil, 200, aVital),
		deny("v1 patient/Observation.read", "vread", "v1-patient-type", "GET", "/Observation/b-vital/_history/1", nil, 403),
		allow("v2 query", "vread", "v2-query", "GET", "/Observation/a-vital/_history/1", nil, 200, aVital),
		deny("v2 query", "vread", "v2-query", "GET", "/Observation/a-lab/_history/1", nil, 403),
		allow("user/ with fhirUser", "vread", "user-fhirUser", "GET", "/Observation/b-lab/_history/1", nil, 200, bLab),
		deny("user/ with fhirUser", "vread", "user-fhirUser", "GET", "/Condition/a-cond/_history/1", nil, 403),
		// instance, type and system history
		allow("v2 .rs", "instance history", "v2-rs", "GET", "/Observation/a-vital/_history", nil, 200, aVital),
		deny("v2 .rs", "instance history", "v2-rs", "GET", "/Observation/b-vital/_history", nil, 403),
		deny("v2 .s", "instance history", "v2-s", "GET", "/Observation/a-vital/_history", nil, 403),
		allow("v2 .rs", "type history", "v2-rs", "GET", "/Observation/_history", nil, 200, aLab, aPanel, aVital),
		deny("v2 .r", "type history", "v2-r", "GET", "/Observation/_history", nil, 403),
		allow("v2 query", "type history", "v2-query", "GET", "/Observation/_history?_total=accurate", nil, 200, aVital),
		allow("system/*.rs", "system history", "system-rs", "GET", "/_history?_count=100", nil, 200, aCond, bCond, aLab, aPanel, aVital, bLab, bVital, pa, pb, "Practitioner/p1", "Practitioner/p2"),
		deny("v2 .rs", "system history", "v2-rs", "GET", "/_history?_count=100", nil, 200, aLab, aPanel, aVital),
		// history paging: the grant is part of the query, so a page holds
		// _count of the caller's versions (patient b's newer ones do not
		// take slots), and the last of them ends the paging.
		allow("v2 .rs", "history paging", "v2-rs", "GET", "/Observation/_history?_count=1", nil, 200, aPanel).more(),
		allow("v2 .rs", "history paging", "v2-rs", "GET", "/Observation/_history?_count=2", nil, 200, aPanel, aLab).more(),
		deny("v2 .rs", "history paging", "v2-rs", "GET", "/Observation/_history?_count=3", nil, 200, aPanel, aLab, aVital).last(),
		deny("v1 patient/*.read", "history paging", "v1-patient-*", "GET", "/_history?_count=5", nil, 200, aPanel, aCond, aLab, aVital, pa).last(),
		deny("user/ with fhirUser", "history paging", "user-fhirUser", "GET", "/Observation/_history?_count=2", nil, 200, bLab, bVital).last(),
		allow("system/*.rs", "history paging", "system-rs", "GET", "/Observation/_history?_count=2", nil, 200, bLab, aPanel).more(),
		// type search, with totals
		allow("v1 patient/*.read", "type search", "v1-patient-*", "GET", "/Observation?_total=accurate", nil, 200, aLab, aPanel, aVital).tot(3),
		deny("v1 patient/*.read", "type search", "v1-patient-*", "GET", "/Observation?subject=Patient/b&_total=accurate", nil, 200).tot(0),
		allow("v2 .s", "type search", "v2-s", "GET", "/Observation?_total=accurate", nil, 200, aLab, aPanel, aVital).tot(3),
		deny("v2 .r", "type search", "v2-r", "GET", "/Observation", nil, 403),
		allow("v2 query", "type search", "v2-query", "GET", "/Observation?_total=accurate", nil, 200, aVital).tot(1),
		deny("v2 query", "type search", "v2-query", "GET", "/Observation?category=laboratory&_total=accurate", nil, 200).tot(0),
		allow("user/ with fhirUser", "type search", "user-fhirUser", "GET", "/Observation?_total=accurate", nil, 200, bLab, bVital).tot(2),
		deny("user/ with fhirUser", "type search", "user-fhirUser", "GET", "/Condition?subject=Patient/a&_total=accurate", nil, 200).tot(0),
		allow("v1 user/*.*", "type search", "v1-user-*", "GET", "/Condition?_total=accurate", nil, 200, aCond, bCond).tot(2),
		allow("system/*.rs", "type search", "system-rs", "GET", "/Patient?_total=accurate", nil, 200, pa, pb).tot(2),
		deny("v1 system/*.write", "type search", "v1-system-write", "GET", "/Patient", nil, 403),
		// system search
		allow("v1 patient/*.read", "system search", "v1-patient-*", "GET", "/?_type=Observation,Condition", nil, 200, aLab, aPanel, aVital, aCond),
		// Patient and Observation have different compartment selections: the
		// total is counted per selection and must count only patient a's.
		allow("v1 patient/*.read", "system search", "v1-patient-*", "GET", "/?_type=Observation,Patient&_total=accurate", nil, 200, aLab, aPanel, aVital, pa).tot(4),
		deny("v2 .rs", "system search", "v2-rs", "GET", "/?_type=Observation,Condition", nil, 200, aLab, aPanel, aVital),
		allow("system/*.rs", "system search", "system-rs", "GET", "/?_type=Condition,Patient", nil, 200, aCond, bCond, pa, pb),
		// _include (and :iterate)
		allow("v1 patient/Observation.read", "_include", "v1-patient-type", "GET", "/Observation?_include=Observation:subject", nil, 200, aLab, aPanel, aVital, pa),
		deny("v2 .rs", "_include", "v2-rs", "GET", "/Observation?_include=Observation:subject", nil, 200, aLab, aPanel, aVital),
		deny("v2 patient/*.cruds", "_include", "v2-wildcard", "GET", "/Observation?_id=a-panel&_include=Observation:has-member", nil, 200, aPanel),
		allow("system/*.rs", "_include", "system-rs", "GET", "/Observation?_id=a-panel&_include=Observation:has-member", nil, 200, aPanel, bVital),
		deny("v2 patient/*.cruds", "_include:iterate", "v2-wildcard", "GET", "/Observation?_id=a-panel&_include=Observation:has-member&_include:iterate=Observation:subject", nil, 200, aPanel, pa),
		allow("system/*.rs", "_include:iterate", "system-rs", "GET", "/Observation?_id=a-panel&_include=Observation:has-member&_include:iterate=Observation:subject", nil, 200, aPanel, bVital, pa, pb),
		// _revinclude (and :iterate)
		allow("v1 patient/*.read", "_revinclude", "v1-patient-*", "GET", "/Patient?_revinclude=Condition:subject", nil, 200, pa, aCond),
		deny("v1 patient/Observation.read", "_revinclude", "v1-patient-type", "GET", "/Patient?_revinclude=Condition:subject", nil, 200, pa),
		allow("user/ with fhirUser", "_revinclude", "user-fhirUser", "GET", "/Patient?_revinclude=Observation:subject", nil, 200, pb, bLab, bVital),
		deny("v2 patient/*.cruds", "_revinclude:iterate", "v2-wildcard", "GET", "/Observation?_id=b-vital,a-vital&_revinclude=Observation:has-member&_include:iterate=Observation:subject", nil, 200, aVital, pa),
		allow("system/*.rs", "_revinclude:iterate", "system-rs", "GET", "/Observation?_id=b-vital&_revinclude=Observation:has-member&_include:iterate=Observation:subject", nil, 200, bVital, aPanel, pa, pb),
		// _has
		allow("v1 patient/*.read", "_has", "v1-patient-*", "GET", "/Patient?_has:Observation:subject:status=final", nil, 200, pa),
		deny("user/ with fhirUser", "_has", "user-fhirUser", "GET", "/Patient?_has:Observation:subject:_id=a-vital", nil, 200),
		deny("v1 patient/Observation.read", "_has", "v1-patient-type", "GET", "/Patient?_has:Condition:subject:code:text=back", nil, 403),
		allow("system/*.rs", "_has", "system-rs", "GET", "/Patient?_has:Condition:subject:code:text=asthma", nil, 200, pb),
		// chained parameters
		allow("v1 patient/*.read", "chain", "v1-patient-*", "GET", "/Observation?subject.name=Alpha", nil, 200, aLab, aPanel, aVital),
		deny("v1 patient/*.read", "chain", "v1-patient-*", "GET", "/Observation?subject.name=Beta&_total=accurate", nil, 200).tot(0),
		deny("v2 .rs", "chain", "v2-rs", "GET", "/Observation?subject.name=Alpha", nil, 200), // no Patient scope: the chain sees no Patient
		allow("system/*.rs", "chain", "system-rs", "GET", "/Observation?subject.name=Beta", nil, 200, bLab, bVital),
		// compartment search
		allow("v1 patient/*.read", "compartment search", "v1-patient-*", "GET", "/Patient/a/Observation?_total=accurate", nil, 200, aLab, aPanel, aVital).tot(3),
		deny("v1 patient/*.read", "compartment search", "v1-patient-*", "GET", "/Patient/b/Observation?_total=accurate", nil, 200).tot(0),
		allow("user/ with fhirUser", "compartment search", "user-fhirUser", "GET", "/Patient/b/Condition", nil, 200, bCond),
		deny("user/ with fhirUser", "compartment search", "user-fhirUser", "GET", "/Patient/a/Condition", nil, 200),
		// batch entries one by one
		deny("v1 patient/Observation.read", "batch", "v1-patient-type", "POST", "", getBatch("batch", "Observation/a-vital", "Observation/b-vital", "Condition?subject=Patient/b"), 200, aVital).ents(200, 403, 403),
		allow("system/*.rs", "batch", "system-rs", "POST", "", getBatch("batch", "Observation/a-vital", "Observation/b-vital", "Condition?subject=Patient/b"), 200, aVital, bVital, bCond).ents(200, 200, 200),
		deny("v2 query", "batch", "v2-query", "POST", "", getBatch("batch", "Observation/a-vital", "Observation/a-lab", "Observation?subject=Patient/a"), 200, aVital).ents(200, 403, 200),
		// operations
		allow("v1 patient/*.read", "$everything", "v1-patient-*", "GET", "/Patient/a/$everything", nil, 200, pa, aLab, aPanel, aVital, aCond),
		deny("v1 patient/*.read", "$everything", "v1-patient-*", "GET", "/Patient/b/$everything", nil, 403),
		deny("v2 .rs", "$everything", "v2-rs", "GET", "/Patient/a/$everything", nil, 403),
		allow("user/ with fhirUser", "$everything", "user-fhirUser", "GET", "/Patient/b/$everything", nil, 200, pb, bLab, bVital, bCond),
		allow("v2 .rs", "$validate", "v2-rs", "POST", "/Observation/a-vital/$validate", nil, 200),
		deny("v2 .rs", "$validate", "v2-rs", "POST", "/Observation/b-vital/$validate", nil, 403),
		deny("v1 patient/*.read", "$import", "v1-patient-*", "POST", "/$import", `{"resourceType":"Observation","id":"imp-b","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/b"}}`, 422).with("Content-Type", "application/fhir+ndjson"), // each line refused: nothing imported
		allow("v1 system/*.write", "$import", "v1-system-write", "POST", "/$import", `{"resourceType":"Observation","id":"imp-b","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/b"}}`, 200).with("Content-Type", "application/fhir+ndjson"),
		deny("v2 .rs", "$reindex-status", "v2-rs", "GET", "/SearchParameter/x/$reindex-status", nil, 403),
		// transaction entries
		deny("v2 .c", "transaction", "v2-c", "POST", "", createTx("a", "b"), 403),
		deny("v2 .rs", "transaction", "v2-rs", "POST", "", getBatch("transaction", "Observation/a-vital", "Observation/b-vital"), 200, aVital).ents(200, 403),
		allow("v2 .c", "transaction", "v2-c", "POST", "", createTx("a"), 200).ents(201),
		// conditional create/update/delete: the match must not see outside data
		deny("v2 patient/*.cruds", "conditional create", "v2-wildcard", "POST", "/Observation", obsBody("", "a"), 201).with("If-None-Exist", "_id=b-lab"),
		allow("v2 patient/*.cruds", "conditional create", "v2-wildcard", "POST", "/Observation", obsBody("", "a"), 200).with("If-None-Exist", "_id=a-lab"),
		deny("v2 .u", "conditional update", "v2-u", "PUT", "/Observation?_id=b-lab", obsBody("b-lab", "a"), 403),
		allow("v2 patient/*.cruds", "conditional update", "v2-wildcard", "PUT", "/Observation?_id=a-lab", obsBody("a-lab", "a"), 200),
		deny("v2 .d", "conditional delete", "v2-d", "DELETE", "/Observation?_id=b-lab", nil, 403), // the match needs s
		deny("v2 patient/*.cruds", "conditional delete", "v2-wildcard", "DELETE", "/Observation?_id=b-lab", nil, 204),
		allow("system/*.rs", "read", "system-rs", "GET", "/Observation/b-lab", nil, 200, bLab).named("read (b-lab survived the conditional deletes)"),
		// create, update, PATCH, delete
		allow("v2 .c", "create", "v2-c", "POST", "/Observation", obsBody("", "a"), 201),
		deny("v2 .c", "create", "v2-c", "POST", "/Observation", obsBody("", "b"), 403),
		allow("v1 system/*.write", "create", "v1-system-write", "POST", "/Observation", obsBody("", "b"), 201),
		deny("v2 .rs", "create", "v2-rs", "POST", "/Observation", obsBody("", "a"), 403),
		allow("v2 .u", "update", "v2-u", "PUT", "/Observation/a-lab", obsBody("a-lab", "a"), 200).noBody(),
		allow("v2 .u", "update u-only with Prefer representation", "v2-u", "PUT", "/Observation/a-lab", obsBody("a-lab", "a"), 200).noBody().with("Prefer", "return=representation"),
		allow("v2 .u", "transaction PUT u-only with Prefer representation", "v2-u", "POST", "", map[string]any{"resourceType": "Bundle", "type": "transaction",
			"entry": []any{map[string]any{"resource": obsBody("a-lab", "a"), "request": map[string]any{"method": "PUT", "url": "Observation/a-lab"}}}}, 200).ents(200).with("Prefer", "return=representation").nothing(),
		deny("v2 .u", "update", "v2-u", "PUT", "/Observation/b-lab", obsBody("b-lab", "b"), 403),
		deny("v2 .u", "update", "v2-u", "PUT", "/Observation/a-lab", obsBody("a-lab", "b"), 403).named("update (move out of the compartment)"),
		deny("user/ with fhirUser", "update", "user-fhirUser", "PUT", "/Observation/a-lab", obsBody("a-lab", "a"), 403),
		allow("v2 .u", "PATCH", "v2-u", "PATCH", "/Observation/a-lab", patch, 200),
		deny("v2 .u", "PATCH", "v2-u", "PATCH", "/Observation/b-lab", patch, 403),
		deny("v2 .rs", "PATCH", "v2-rs", "PATCH", "/Observation/a-lab", patch, 403),
		// u without r: the answer shows nothing of the resource, and a
		// test operation is refused whatever its outcome would be.
		allow("v2 .u", "PATCH u-only (no body)", "v2-u", "PATCH", "/Observation/a-lab", `[{"op":"replace","path":"/status","value":"amended"}]`, 200).noBody(),
		allow("v2 .u", "PATCH u-only with Prefer representation", "v2-u", "PATCH", "/Observation/a-lab", `[{"op":"replace","path":"/status","value":"corrected"}]`, 200).noBody().with("Prefer", "return=representation"),
		deny("v2 .u", "PATCH u-only test (would pass)", "v2-u", "PATCH", "/Observation/a-lab", `[{"op":"test","path":"/status","value":"corrected"}]`, 403),
		deny("v2 .u", "PATCH u-only test (would fail)", "v2-u", "PATCH", "/Observation/a-lab", `[{"op":"test","path":"/status","value":"final"}]`, 403),
		deny("v2 .u", "PATCH u-only failing path", "v2-u", "PATCH", "/Observation/a-lab", `[{"op":"remove","path":"/valueString"}]`, 422),
		allow("v2 patient/*.cruds", "PATCH test with r", "v2-wildcard", "PATCH", "/Observation/a-lab", `[{"op":"test","path":"/status","value":"corrected"}]`, 200, aLab),
		deny("v2 .d", "delete", "v2-d", "DELETE", "/Observation/b-lab", nil, 403),
		deny("v2 .u", "delete", "v2-u", "DELETE", "/Observation/a-lab", nil, 403),
		allow("v2 .d", "delete", "v2-d", "DELETE", "/Observation/a-lab", nil, 204),
	}
}
