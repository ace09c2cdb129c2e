package research_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/auth/smart"
	"github.com/anodyne-fhir/anodyne/deid"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/fhir/fhirtest"
	"github.com/anodyne-fhir/anodyne/research"
	"github.com/anodyne-fhir/anodyne/storage"
)

// env is the real FHIR server (SQLite or FerretDB) with authorization on
// as anodyne serve wires it (the built-in SMART server, token verification,
// the decision point, the audit middleware) and the research filter. Tests
// name the caller ("clinician", "auditor", "research:PROJECT", "aggregates:PROJECT"):
// each is a backend-services client registered on first use, and every
// request carries a real token from the client_credentials grant.
type env struct {
	t       testing.TB
	base    string
	srv     *fhirtest.Server
	auth    *fhirtest.Auth
	backend storage.Backend
	mu      sync.Mutex
	clients map[string]*fhirtest.BackendClient
}

// harness is the test binary's shared FerretDB, validator and registry.
var harness *fhirtest.Env

func TestMain(m *testing.M) {
	var err error
	if harness, err = fhirtest.NewEnv("research"); err != nil {
		panic(err)
	}
	code := m.Run()
	if err := harness.Close(); err != nil {
		slog.Error("stopping FerretDB", "err", err)
	}
	os.Exit(code)
}

// backendNames are the backends the end-to-end tests run on.
var backendNames = []string{"sqlite", "mongo"}

func start(t testing.TB) *env { return startOn(t, "sqlite", nil) }

// startOn starts the server on the named backend; rules replaces the
// default de-identification rules when not nil.
func startOn(t testing.TB, backend string, rules []byte) *env {
	t.Helper()
	var be storage.Backend
	for _, b := range harness.Backends() {
		if b.Name == backend {
			be = b.Open(t)
		}
	}
	if be == nil {
		t.Fatalf("unknown backend %q", backend)
	}
	if rules == nil {
		rules = deid.DefaultRules()
	}
	d, err := deid.New(rules)
	if err != nil {
		t.Fatal(err)
	}
	exportDir := t.TempDir()
	srv, as := harness.StartSMART(t, be, func(cfg *fhir.Config) {
		cfg.ExportDir = exportDir
		cfg.Output = research.New(d, be, cfg.Registry, cfg.Logger)
	})
	return &env{t: t, base: srv.Base, srv: srv, auth: as, backend: be, clients: map[string]*fhirtest.BackendClient{}}
}

// token is a real access token of the caller who names.
func (e *env) token(who string) string {
	e.t.Helper()
	e.mu.Lock()
	c, ok := e.clients[who]
	if !ok {
		reg := smart.Client{ID: strings.ReplaceAll(who, ":", "-"), Scopes: "system/*.cruds"}
		if who == "auditor" { // AuditEvents open to their own scope only
			reg.Scopes = "system/AuditEvent.rs"
		}
		if kind, project, ok := strings.Cut(who, ":"); ok {
			reg.Scopes, reg.ResearchProject, reg.ResearchAccess = "system/*.rs", project, auth.ResearchRows
			if kind == "aggregates" {
				reg.ResearchAccess = auth.ResearchAggregates
			}
		}
		c = e.auth.BackendClient(e.t, reg)
		e.clients[who] = c
	}
	e.mu.Unlock()
	return c.Token(e.t, "")
}

func (e *env) do(who, method, path, body string) (int, map[string]any) {
	e.t.Helper()
	st, raw, _ := e.raw(who, method, path, body)
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	_ = dec.Decode(&m)
	return st, m
}

func (e *env) raw(who, method, path, body string) (int, []byte, http.Header) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, e.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+e.token(who))
	req.Header.Set("Accept", "application/fhir+json")
	if body != "" {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	if strings.HasSuffix(strings.SplitN(path, "?", 2)[0], "$export") {
		req.Header.Set("Prefer", "respond-async")
	}
	if strings.HasPrefix(path, "http") {
		req.URL, _ = url.Parse(path)
	}
	resp, err := e.srv.Client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, resp.Header
}

func entries(b map[string]any) []map[string]any {
	var out []map[string]any
	es, _ := b["entry"].([]any)
	for _, e := range es {
		if r, ok := e.(map[string]any)["resource"].(map[string]any); ok {
			out = append(out, r)
		}
	}
	return out
}

const (
	patient = `{"resourceType":"Patient","id":"p1","name":[{"family":"Quixotewell","given":["Ana"]}],"birthDate":"1970-04-02",
 "telecom":[{"system":"phone","value":"555-0100"}],"address":[{"line":["12 Elm St"],"city":"Newton","state":"MA","postalCode":"02459"}]}`
	obs1 = `{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"72514-3"}],"text":"Pain severity"},
 "subject":{"reference":"Patient/p1","display":"Ana Quixotewell"},"effectiveDateTime":"2024-03-10T08:15:00Z","valueQuantity":{"value":7,"unit":"{score}"},"note":[{"text":"knee hurts"}]}`
	obs2 = `{"resourceType":"Observation","id":"o2","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"72514-3"}]},
 "subject":{"reference":"Patient/p1"},"effectiveDateTime":"2024-03-12T20:45:00Z","valueQuantity":{"value":4,"unit":"{score}"}}`
)

func TestResearchAccess(t *testing.T) {
	for _, backend := range backendNames {
		t.Run(backend, func(t *testing.T) { testResearchAccess(t, startOn(t, backend, nil)) })
	}
}

func testResearchAccess(t *testing.T, e *env) {
	for _, r := range []struct{ path, body string }{{"/Patient/p1", patient}, {"/Observation/o1", obs1}, {"/Observation/o2", obs2}} {
		if st, b := e.do("clinician", "PUT", r.path, r.body); st >= 300 {
			t.Fatalf("seed %s: %d %v", r.path, st, b)
		}
	}
	const A, B = "research:alpha", "research:beta"
	st, b := e.do(A, "GET", "/Observation?code=http://loinc.org|72514-3", "")
	if st != 200 {
		t.Fatalf("research search: %d %v", st, b)
	}
	obs := entries(b)
	if len(obs) != 2 {
		t.Fatalf("research search found %d Observations, want 2", len(obs))
	}
	raw, _ := json.Marshal(b)
	for _, secret := range []string{"Quixotewell", "Ana", "knee hurts", "Pain severity", "Patient/p1", `"o1"`, "2024-03-10T08:15:00Z", "/Observation/o1"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("research answer contains %q", secret)
		}
	}
	// Values and codes kept exactly; the interval between one patient's
	// readings is kept; one patient, one pseudonym.
	byValue := map[string]map[string]any{}
	for _, o := range obs {
		byValue[string(o["valueQuantity"].(map[string]any)["value"].(json.Number))] = o
	}
	if byValue["7"] == nil || byValue["4"] == nil {
		t.Fatalf("numeric values not kept: %v", obs)
	}
	t1, _ := time.Parse(time.RFC3339, byValue["7"]["effectiveDateTime"].(string))
	t2, _ := time.Parse(time.RFC3339, byValue["4"]["effectiveDateTime"].(string))
	want := time.Date(2024, 3, 12, 20, 45, 0, 0, time.UTC).Sub(time.Date(2024, 3, 10, 8, 15, 0, 0, time.UTC))
	if t2.Sub(t1) != want || t1.Equal(time.Date(2024, 3, 10, 8, 15, 0, 0, time.UTC)) {
		t.Errorf("dates %v %v: interval %v want %v, and shifted", t1, t2, t2.Sub(t1), want)
	}
	subj := byValue["7"]["subject"].(map[string]any)["reference"].(string)
	if subj != byValue["4"]["subject"].(map[string]any)["reference"].(string) || !strings.HasPrefix(subj, "Patient/") {
		t.Fatalf("one patient, two pseudonyms: %v", obs)
	}
	pseud := strings.TrimPrefix(subj, "Patient/")
	testNoIdentityLeaves(t, e, "research:alpha", pseud)

	// Requests speak pseudonyms; real ids match nothing.
	if st, p := e.do(A, "GET", "/Patient/"+pseud, ""); st != 200 || p["name"] != nil || p["telecom"] != nil || p["id"] != pseud {
		t.Errorf("read by pseudonym: %d %v", st, p)
	} else if addr, _ := json.Marshal(p["address"]); strings.Contains(string(addr), "Elm") || !strings.Contains(string(addr), `"024"`) {
		t.Errorf("address not reduced to ZIP3: %s", addr)
	}
	if st, _ := e.do(A, "GET", "/Patient/p1", ""); st != 404 {
		t.Errorf("read by real id: %d, want 404", st)
	}
	if _, b := e.do(A, "GET", "/Observation?subject="+url.QueryEscape(subj), ""); len(entries(b)) != 2 {
		t.Errorf("search by pseudonym found %d, want 2", len(entries(b)))
	}
	if _, b := e.do(A, "GET", "/Observation?subject=Patient/p1", ""); len(entries(b)) != 0 {
		t.Errorf("search by real id found %d, want 0", len(entries(b)))
	}
	if _, b := e.do(A, "GET", "/Patient/"+pseud+"/Observation", ""); len(entries(b)) != 2 {
		t.Errorf("compartment search by pseudonym found %d, want 2", len(entries(b)))
	}
	if _, b := e.do(A, "GET", "/Patient/"+pseud+"/$everything", ""); len(entries(b)) != 3 {
		t.Errorf("$everything by pseudonym found %d, want 3", len(entries(b)))
	}

	// Another project sees other pseudonyms and another shift.
	_, bb := e.do(B, "GET", "/Observation?code=http://loinc.org|72514-3", "")
	ob := entries(bb)
	if len(ob) != 2 || ob[0]["subject"].(map[string]any)["reference"] == subj {
		t.Errorf("project beta shares alpha's pseudonym: %v", ob)
	}
	if st, _ := e.do(B, "GET", "/Patient/"+pseud, ""); st != 404 {
		t.Errorf("alpha's pseudonym works for beta: %d", st)
	}

	// No membership oracle: a real and a nonsense value answer alike.
	for _, q := range []string{
		"/Patient?family=%s", "/Patient?name=%s", "/Observation?subject:Patient.name=%s", "/Observation?subject.family=%s",
		"/Patient?identifier=%s", "/Patient?phone=%s", "/Patient?address-city=%s", "/Observation?_has:Patient:link:name=%s",
	} {
		sr, br := e.do(A, "GET", strings.Replace(q, "%s", "Quixotewell", 1), "")
		sn, bn := e.do(A, "GET", strings.Replace(q, "%s", "Zzyqvbn", 1), "")
		jr, _ := json.Marshal(br)
		jn, _ := json.Marshal(bn)
		if sr != sn || string(jr) != string(jn) {
			t.Errorf("%s: real name answers %d %s, nonsense %d %s", q, sr, jr, sn, jn)
		}
		if sr != 400 && len(entries(br)) != 0 {
			t.Errorf("%s: answered %d with matches", q, sr)
		}
	}
	for _, q := range []string{"/Patient?birthdate=1970-04-02", "/Observation?date=2024-03-10", "/Patient?_sort=birthdate", "/Observation?_lastUpdated=gt2020", "/Observation?_sort=-date"} {
		if st, o := e.do(A, "GET", q, ""); st != 400 || !strings.Contains(mustString(o), "research access") {
			t.Errorf("%s: %d %v, want 400 saying why", q, st, o)
		}
	}

	// $export writes the same de-identified resources, same pseudonyms.
	st, _, hdr := e.raw(A, "GET", "/Patient/$export", "")
	if st != http.StatusAccepted {
		t.Fatalf("research $export kick-off: %d", st)
	}
	var files string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		st, m := e.do(A, "GET", hdr.Get("Content-Location"), "")
		if st == http.StatusAccepted {
			continue
		}
		outs, _ := m["output"].([]any)
		for _, o := range outs {
			_, body, _ := e.raw(A, "GET", o.(map[string]any)["url"].(string), "")
			files += string(body)
		}
		break
	}
	if !strings.Contains(files, `"`+pseud+`"`) || !strings.Contains(files, subj) || strings.Contains(files, "Quixotewell") || strings.Contains(files, `"p1"`) || strings.Contains(files, "Patient/p1") {
		t.Errorf("research export is not de-identified under the project's pseudonyms:\n%s", files)
	}
	if st, _, _ := e.raw("aggregates:alpha", "GET", "/$export", ""); st != http.StatusForbidden {
		t.Errorf("aggregates client $export: %d, want 403", st)
	}

	// Research clients never write; aggregates-only clients get no row.
	if st, _ := e.do(A, "POST", "/Observation", obs2); st != 403 {
		t.Errorf("research write: %d, want 403", st)
	}
	if st, _ := e.do("aggregates:alpha", "GET", "/Observation", ""); st != 403 {
		t.Errorf("aggregates client search: %d, want 403", st)
	}
	// The clinician still sees everything as stored.
	if _, c := e.do("clinician", "GET", "/Observation/o1", ""); c["note"] == nil {
		t.Errorf("clinician read lost content: %v", c)
	}
	testResearchAudit(t, e)
}

// testResearchAudit: every request of the research clients above left an
// AuditEvent naming the client and the project with purposeOfUse
// research, the refused ones (a write, a search by an aggregates client)
// with a failure outcome.
func testResearchAudit(t *testing.T, e *env) {
	st, b := e.do("auditor", "GET", "/AuditEvent?_count=1000", "")
	if st != 200 {
		t.Fatalf("AuditEvent search: %d %v", st, b)
	}
	type seen struct{ events, refused, unlabelled int }
	byClient := map[string]*seen{}
	for _, ev := range entries(b) {
		client, _ := fhirtest.Get(ev, "agent", 0, "who", "identifier", "value").(string)
		project := ""
		for _, ent := range ev["entity"].([]any) {
			if fhirtest.Get(ent, "what", "identifier", "system") == auth.ResearchProjectSystem {
				project, _ = fhirtest.Get(ent, "what", "identifier", "value").(string)
			}
		}
		if !strings.HasPrefix(client, "research-") && !strings.HasPrefix(client, "aggregates-") {
			if project != "" {
				t.Errorf("a request of %q is labelled research project %q", client, project)
			}
			continue
		}
		s := byClient[client]
		if s == nil {
			s = &seen{}
			byClient[client] = s
		}
		s.events++
		if fhirtest.Get(ev, "outcome") != "0" {
			s.refused++
		}
		_, wantProject, _ := strings.Cut(client, "-")
		if project != wantProject || fhirtest.Get(ev, "agent", 0, "purposeOfUse", 0, "coding", 0, "code") != "HRESCH" {
			s.unlabelled++
		}
	}
	// research-alpha was refused a write and the date searches; beta and
	// the aggregates client made at least one request each.
	for client, minRefused := range map[string]int{"research-alpha": 6, "research-beta": 0, "aggregates-alpha": 2} {
		s := byClient[client]
		if s == nil || s.events == 0 {
			t.Errorf("no AuditEvent for %s", client)
			continue
		}
		if s.refused < minRefused || s.unlabelled != 0 {
			t.Errorf("%s: %d events, %d refused (want >= %d), %d without project and purposeOfUse", client, s.events, s.refused, minRefused, s.unlabelled)
		}
	}
}

func mustString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
