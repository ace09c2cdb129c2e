package fhir_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// bulkServer starts the real server with bulk export enabled on b,
// keeping its files in dir; the server's workers stop at cleanup.
func bulkServer(t testing.TB, b storage.Backend, dir string, mod func(*fhir.Config)) (*client, *fhir.Server) {
	t.Helper()
	return startServer(t, b, func(cfg *fhir.Config) {
		cfg.ExportDir = dir
		if mod != nil {
			mod(cfg)
		}
	})
}

var asyncHdr = []string{"Prefer: respond-async", "Accept: application/fhir+json"}

// kickOff starts an export and returns the status URL.
func kickOff(t testing.TB, c *client, path string, hdr ...string) string {
	t.Helper()
	r := c.do("GET", path, "", append(asyncHdr, hdr...)...).expect(t, http.StatusAccepted)
	loc := r.header.Get("Content-Location")
	if !strings.HasPrefix(loc, c.base+"/") {
		t.Fatalf("Content-Location %q is not on the server", loc)
	}
	return loc
}

type manifest struct {
	TransactionTime     string `json:"transactionTime"`
	Request             string `json:"request"`
	RequiresAccessToken bool   `json:"requiresAccessToken"`
	Output              []struct {
		Type  string `json:"type"`
		URL   string `json:"url"`
		Count int    `json:"count"`
	} `json:"output"`
	Error []any `json:"error"`
}

// await polls the status URL until the manifest is ready, checking the
// headers of each in-progress answer.
func await(t testing.TB, c *client, status string, hdr ...string) manifest {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		r := c.do("GET", status, "", hdr...)
		switch r.status {
		case http.StatusAccepted:
			if r.header.Get("Retry-After") == "" || r.header.Get("X-Progress") == "" {
				t.Fatalf("202 without Retry-After/X-Progress: %v", r.header)
			}
			time.Sleep(20 * time.Millisecond)
			continue
		case http.StatusOK:
			var m manifest
			if err := json.Unmarshal(r.body, &m); err != nil {
				t.Fatalf("manifest: %v: %s", err, r.body)
			}
			if m.TransactionTime == "" || m.Request == "" || m.Error == nil {
				t.Fatalf("incomplete manifest: %s", r.body)
			}
			return m
		default:
			t.Fatalf("status poll: %d %s", r.status, r.body)
		}
	}
	t.Fatal("export did not finish in time")
	return manifest{}
}

// download fetches every output file and returns the resources by type,
// checking that each line is a resource of the file's type.
func download(t testing.TB, c *client, m manifest, hdr ...string) map[string][]map[string]any {
	t.Helper()
	out := map[string][]map[string]any{}
	for _, o := range m.Output {
		r := c.do("GET", o.URL, "", append([]string{"Accept: application/fhir+ndjson"}, hdr...)...).expect(t, http.StatusOK)
		if ct := r.header.Get("Content-Type"); ct != "application/fhir+ndjson" {
			t.Errorf("file Content-Type %q", ct)
		}
		sc := bufio.NewScanner(bytes.NewReader(r.body))
		sc.Buffer(nil, 16<<20)
		n := 0
		for sc.Scan() {
			d := json.NewDecoder(bytes.NewReader(sc.Bytes()))
			d.UseNumber()
			var res map[string]any
			if err := d.Decode(&res); err != nil {
				t.Fatalf("%s line %d: %v", o.URL, n+1, err)
			}
			if res["resourceType"] != o.Type {
				t.Fatalf("%s holds a %v", o.URL, res["resourceType"])
			}
			out[o.Type] = append(out[o.Type], res)
			n++
		}
		if n != o.Count {
			t.Errorf("%s: %d lines, manifest says %d", o.Type, n, o.Count)
		}
	}
	return out
}

// total asks the server how many resources a search matches.
func total(t testing.TB, c *client, query string) int {
	t.Helper()
	sep := "?"
	if strings.Contains(query, "?") {
		sep = "&"
	}
	n, err := get(c.do("GET", query+sep+"_summary=count", "").expect(t, http.StatusOK).json(t), "total").(json.Number).Int64()
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

func countAll(res map[string][]map[string]any) int {
	n := 0
	for _, l := range res {
		n += len(l)
	}
	return n
}

// importSynthea imports the Synthea transaction Bundles of testdata through
// the importer and returns how many resources were stored.
func importSynthea(t testing.TB, srv *fhir.Server) int {
	t.Helper()
	files, _ := filepath.Glob("../testdata/synthea/*.json")
	if len(files) == 0 {
		t.Fatal("no Synthea bundles in ../testdata/synthea")
	}
	rep, err := srv.Importer().ImportPaths(context.Background(), files, fhir.ImportOptions{Restart: true})
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if rep.Failed > 0 || rep.Stored == 0 {
		t.Fatalf("import stored %d, failed %d: %+v", rep.Stored, rep.Failed, rep.Failures)
	}
	return int(rep.Stored)
}

func TestBulkExport(t *testing.T) {
	b := backends()[0].open(t)
	dir := t.TempDir()
	c, srv := bulkServer(t, b, dir, nil)
	stored := importSynthea(t, srv)

	t.Run("kick-off errors", func(t *testing.T) {
		c.do("GET", "/$export", "").expect(t, http.StatusBadRequest)
		for _, q := range []string{"_type=Nope", "_outputFormat=text/csv", "_since=yesterday", "_typeFilter=Observation", "_typeFilter=Observation%3Fnope%3D1", "_type=Patient&_typeFilter=Observation%3Fstatus%3Dfinal"} {
			c.do("GET", "/$export?"+q, "", asyncHdr...).expect(t, http.StatusBadRequest)
		}
		c.do("GET", "/Patient/$export?_type=Organization", "", asyncHdr...).expect(t, http.StatusBadRequest)
		c.do("GET", "/Group/nope/$export", "", asyncHdr...).expect(t, http.StatusNotFound)
		c.do("GET", "/$export-status/nope", "").expect(t, http.StatusNotFound)
	})

	t.Run("system", func(t *testing.T) {
		m := await(t, c, kickOff(t, c, "/$export?_outputFormat=application/fhir%2Bndjson"))
		if m.RequiresAccessToken {
			t.Error("requiresAccessToken true without authorization")
		}
		got := download(t, c, m)
		if n := countAll(got); n != stored {
			t.Errorf("exported %d resources, imported %d", n, stored)
		}
		for typ, list := range got {
			if n := total(t, c, "/"+typ); n != len(list) {
				t.Errorf("%s: exported %d, search finds %d", typ, len(list), n)
			}
		}
	})

	t.Run("_type", func(t *testing.T) {
		got := download(t, c, await(t, c, kickOff(t, c, "/$export?_type=Patient,Observation")))
		if len(got) != 2 || len(got["Patient"]) != total(t, c, "/Patient") || len(got["Observation"]) != total(t, c, "/Observation") {
			t.Errorf("types %v", keys(got))
		}
	})

	t.Run("_since", func(t *testing.T) {
		time.Sleep(5 * time.Millisecond)
		since := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
		time.Sleep(5 * time.Millisecond)
		c.do("PUT", "/Patient/late", patientJSON("late", "Late")).expect(t, http.StatusCreated)
		got := download(t, c, await(t, c, kickOff(t, c, "/$export?_since="+url.QueryEscape(since))))
		if countAll(got) != 1 || got["Patient"][0]["id"] != "late" {
			t.Errorf("_since export: %v", got)
		}
	})

	t.Run("_typeFilter", func(t *testing.T) {
		// One code, and two queries for the same type ORed.
		tf := url.QueryEscape("Observation?code=http://loinc.org|8302-2") + "," + url.QueryEscape("Observation?code=http://loinc.org|29463-7,http://loinc.org|39156-5")
		got := download(t, c, await(t, c, kickOff(t, c, "/$export?_type=Observation,Patient&_typeFilter="+tf)))
		want := total(t, c, "/Observation?code=http://loinc.org|8302-2,http://loinc.org|29463-7,http://loinc.org|39156-5")
		if want == 0 || len(got["Observation"]) != want {
			t.Errorf("_typeFilter exported %d observations, want %d", len(got["Observation"]), want)
		}
		if len(got["Patient"]) != total(t, c, "/Patient") {
			t.Errorf("a type without _typeFilter must be exported whole")
		}
	})

	t.Run("patient level", func(t *testing.T) {
		got := download(t, c, await(t, c, kickOff(t, c, "/Patient/$export")))
		if _, ok := got["Organization"]; ok {
			t.Error("Organization is not in the Patient compartment")
		}
		if len(got["Patient"]) != total(t, c, "/Patient") || len(got["Encounter"]) != total(t, c, "/Encounter") {
			t.Errorf("patient-level export: %v", counts(got))
		}
	})

	t.Run("group", func(t *testing.T) {
		pid := get(c.do("GET", "/Patient?family=Dach", "").expect(t, http.StatusOK).json(t), "entry", 0, "resource", "id").(string)
		group := `{"resourceType":"Group","id":"pain","type":"person","actual":true,"member":[{"entity":{"reference":"Patient/` + pid + `"}},{"entity":{"reference":"Patient/unknown"}}]}`
		c.do("PUT", "/Group/pain", group).expect(t, http.StatusCreated)
		got := download(t, c, await(t, c, kickOff(t, c, "/Group/pain/$export?_type=Patient,Observation,Encounter")))
		if len(got["Patient"]) != 1 || got["Patient"][0]["id"] != pid {
			t.Fatalf("group patients: %v", got["Patient"])
		}
		if n := total(t, c, "/Observation?subject=Patient/"+pid); n == 0 || len(got["Observation"]) != n {
			t.Errorf("group observations %d, want %d", len(got["Observation"]), n)
		}
		for _, o := range got["Observation"] {
			if get(o, "subject", "reference") != "Patient/"+pid {
				t.Errorf("observation of another patient: %v", get(o, "subject"))
			}
		}
	})

	t.Run("cancel", func(t *testing.T) {
		status := kickOff(t, c, "/$export")
		m := await(t, c, status)
		jobDirs, _ := os.ReadDir(dir)
		c.do("DELETE", status, "").expect(t, http.StatusAccepted)
		c.do("GET", status, "").expect(t, http.StatusNotFound)
		c.do("GET", m.Output[0].URL, "").expect(t, http.StatusNotFound)
		after, _ := os.ReadDir(dir)
		if len(after) != len(jobDirs)-1 {
			t.Errorf("job directories %d before cancel, %d after", len(jobDirs), len(after))
		}
		c.do("DELETE", status, "").expect(t, http.StatusNotFound)
	})
}

func keys(m map[string][]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func counts(m map[string][]map[string]any) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = len(v)
	}
	return out
}

// TestBulkExportRestart: a job accepted by a server that stops before
// running it completes on the next server over the same store.
func TestBulkExportRestart(t *testing.T) {
	b := backends()[0].open(t)
	dir := t.TempDir()
	// The first server accepts jobs but has no worker, standing for a
	// process that stopped before or while running the job.
	c1, srv1 := bulkServer(t, b, dir, func(cfg *fhir.Config) { cfg.ExportWorkers = -1 })
	stored := importSynthea(t, srv1)
	status := kickOff(t, c1, "/$export")
	r := c1.do("GET", status, "").expect(t, http.StatusAccepted)
	if !strings.Contains(r.header.Get("X-Progress"), "queued") {
		t.Errorf("X-Progress %q", r.header.Get("X-Progress"))
	}
	// A queued job deleted before it ran never runs.
	dropped := kickOff(t, c1, "/$export?_type=Patient")
	c1.do("DELETE", dropped, "").expect(t, http.StatusAccepted)
	srv1.Close()

	c2, _ := bulkServer(t, b, dir, nil)
	path := status[strings.Index(status, "/$export-status/"):]
	got := download(t, c2, await(t, c2, c2.base+path))
	if n := countAll(got); n != stored {
		t.Errorf("exported %d after restart, want %d", n, stored)
	}
	c2.do("GET", c2.base+dropped[strings.Index(dropped, "/$export-status/"):], "").expect(t, http.StatusNotFound)
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%d job directories, want only the finished job's", len(entries))
	}
}

// principals stands in for token verification (tested in package auth):
// the X-Test-Principal header picks who is calling.
func principals(ps map[string]*auth.Principal) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			if p := ps[r.Header.Get("X-Test-Principal")]; p != nil {
				c.SetRequest(r.WithContext(auth.WithPrincipal(r.Context(), p)))
			}
			return next(c)
		}
	}
}

func TestBulkExportAuthorization(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			b := be.open(t)
			_, reg := parts(t)
			ps := map[string]*auth.Principal{
				"pa":    {Issuer: "https://idp", ClientID: "app", Subject: "u-pa", Patient: "pa", Scopes: auth.ParseScopes("patient/*.rs")},
				"other": {Issuer: "https://idp", ClientID: "other-app", Subject: "u-x", Scopes: auth.ParseScopes("system/*.rs")},
				"admin": {Issuer: "https://idp", ClientID: "etl", Subject: "etl", Scopes: auth.ParseScopes("system/*.cruds")},
				"nope":  {Issuer: "https://idp", ClientID: "app", Subject: "u-y", Scopes: auth.ParseScopes("patient/Observation.rs")},
			}
			c, _ := bulkServer(t, b, t.TempDir(), func(cfg *fhir.Config) {
				cfg.Authorizer = auth.NewPolicy(reg)
				cfg.Middleware = principals(ps)
			})
			as := func(who string) string { return "X-Test-Principal: " + who }
			for _, p := range []string{"pa", "pb"} {
				c.do("PUT", "/Patient/"+p, patientJSON(p, "Fam"+p), as("admin")).expect(t, http.StatusCreated)
				c.do("PUT", "/Observation/o-"+p, obsFor("o-"+p, p), as("admin")).expect(t, http.StatusCreated)
			}
			c.do("GET", "/$export", "", append(asyncHdr, as("nope"))...).expect(t, http.StatusForbidden)
			c.do("GET", "/$export", "", asyncHdr...).expect(t, http.StatusForbidden)

			status := kickOff(t, c, "/$export", as("pa"))
			m := await(t, c, status, as("pa"))
			if !m.RequiresAccessToken {
				t.Error("requiresAccessToken false with authorization on")
			}
			got := download(t, c, m, as("pa"))
			var ids []string
			for _, l := range got {
				for _, res := range l {
					ids = append(ids, res["resourceType"].(string)+"/"+res["id"].(string))
				}
			}
			sort.Strings(ids)
			if want := []string{"Observation/o-pa", "Patient/pa"}; !slices.Equal(ids, want) {
				t.Errorf("patient-scoped export %v, want %v", ids, want)
			}
			// Another client learns nothing: not the status, not the files,
			// and cannot cancel.
			c.do("GET", status, "", as("other")).expect(t, http.StatusNotFound)
			for _, o := range m.Output {
				c.do("GET", o.URL, "", as("other")).expect(t, http.StatusNotFound)
				c.do("GET", o.URL, "").expect(t, http.StatusForbidden)
			}
			c.do("DELETE", status, "", as("other")).expect(t, http.StatusNotFound)
			c.do("GET", status, "", as("pa")).expect(t, http.StatusOK)

			// A system client sees everything.
			all := download(t, c, await(t, c, kickOff(t, c, "/$export?_type=Patient,Observation", as("other")), as("other")), as("other"))
			if countAll(all) != 4 {
				t.Errorf("system export %v", counts(all))
			}
		})
	}
}

// TestExportImportRoundTrip exports everything from one server and
// imports the files over HTTP ($import) into an empty one: every
// resource comes back identical but for meta.versionId/lastUpdated.
func TestExportImportRoundTrip(t *testing.T) {
	src, srv := bulkServer(t, backends()[0].open(t), t.TempDir(), nil)
	stored := importSynthea(t, srv)
	exported := download(t, src, await(t, src, kickOff(t, src, "/$export")))
	if countAll(exported) != stored {
		t.Fatalf("exported %d of %d", countAll(exported), stored)
	}
	dst, _ := bulkServer(t, backends()[0].open(t), t.TempDir(), nil)
	for typ, list := range exported {
		var body bytes.Buffer
		for _, res := range list {
			raw, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			body.Write(raw)
			body.WriteByte('\n')
		}
		r := dst.do("POST", "/$import", body.String(), "Content-Type: application/fhir+ndjson").expect(t, http.StatusOK)
		if !strings.Contains(string(r.body), "imported "+itoa(len(list))+" resources, 0 failed") {
			t.Fatalf("%s import: %s", typ, r.body)
		}
	}
	for typ, list := range exported {
		for _, want := range list {
			got := dst.do("GET", "/"+typ+"/"+want["id"].(string), "").expect(t, http.StatusOK).json(t)
			if !sameIgnoringVersion(t, want, got) {
				t.Fatalf("%s/%s differs after the round trip", typ, want["id"])
			}
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func sameIgnoringVersion(t testing.TB, a, b map[string]any) bool {
	t.Helper()
	strip := func(m map[string]any) []byte {
		c := map[string]any{}
		for k, v := range m {
			c[k] = v
		}
		if meta, ok := m["meta"].(map[string]any); ok {
			mc := map[string]any{}
			for k, v := range meta {
				if k != "versionId" && k != "lastUpdated" {
					mc[k] = v
				}
			}
			if len(mc) > 0 {
				c["meta"] = mc
			} else {
				delete(c, "meta")
			}
		}
		raw, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	x, y := strip(a), strip(b)
	if !bytes.Equal(x, y) {
		t.Logf("want %s\ngot  %s", x, y)
		return false
	}
	return true
}

// TestImportResumeAndFailures interrupts an NDJSON import after its first
// batch, resumes it (nothing is imported twice), and checks the report of
// the lines that cannot be imported.
func TestImportResumeAndFailures(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c, srv := bulkServer(t, be.open(t), "", nil)
			var lines []string
			for i := range 7 {
				id := "p" + itoa(i)
				lines = append(lines, patientJSON(id, "Fam"+id))
			}
			lines = slices.Insert(lines, 2, `{"resourceType":"Patient","id":"bad","gender":"sometimes"}`)
			lines = slices.Insert(lines, 5, `{"resourceType":"Patient","name":[{"family":"NoID"}]}`)
			lines = append(lines, "", `{"resourceType":`)
			path := filepath.Join(t.TempDir(), "Patient.ndjson")
			if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			opts := fhir.ImportOptions{BatchSize: 3, Progress: func(fhir.ImportProgress) { cancel() }}
			rep, err := srv.Importer().ImportPaths(ctx, []string{path}, opts)
			if err == nil || rep.Stored != 2 || rep.Failed != 1 {
				t.Fatalf("interrupted import: err %v, stored %d, failed %d", err, rep.Stored, rep.Failed)
			}
			rep, err = srv.Importer().ImportPaths(context.Background(), []string{path}, fhir.ImportOptions{BatchSize: 3})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Skipped != 3 || rep.Stored != 5 || rep.Failed != 2 {
				t.Fatalf("resumed import: skipped %d, stored %d, failed %d: %+v", rep.Skipped, rep.Stored, rep.Failed, rep.Failures)
			}
			wantLines := []int{6, 11}
			for i, f := range rep.Failures {
				if f.Line != wantLines[i] || f.File != path || f.Reason == "" {
					t.Errorf("failure %d: %+v", i, f)
				}
			}
			if !strings.Contains(rep.Failures[0].Reason, "id") {
				t.Errorf("missing id not explained: %q", rep.Failures[0].Reason)
			}
			for i := range 7 {
				r := c.do("GET", "/Patient/p"+itoa(i), "").expect(t, http.StatusOK).json(t)
				if v := get(r, "meta", "versionId"); v != "1" {
					t.Errorf("p%d has version %v: imported twice", i, v)
				}
			}
			// A finished file is not imported again; Restart does.
			if rep, err = srv.Importer().ImportPaths(context.Background(), []string{path}, fhir.ImportOptions{}); err != nil || rep.Stored != 0 {
				t.Fatalf("third import: %v, stored %d", err, rep.Stored)
			}
			if rep, err = srv.Importer().ImportPaths(context.Background(), []string{path}, fhir.ImportOptions{Restart: true}); err != nil || rep.Stored != 7 {
				t.Fatalf("restarted import: %v, stored %d", err, rep.Stored)
			}
			if v := get(c.do("GET", "/Patient/p0", "").expect(t, http.StatusOK).json(t), "meta", "versionId"); v != "2" {
				t.Errorf("re-import made version %v, want 2", v)
			}

			// A transaction Bundle: one transaction where the database has
			// them, else (FerretDB) its resources in batches; either way
			// the urn:uuid reference is resolved.
			bundle := `{"resourceType":"Bundle","type":"transaction","entry":[
			 {"fullUrl":"urn:uuid:0b7e4b9e-6a0a-4f44-9d59-1c8f6f7c3a01","resource":{"resourceType":"Patient","name":[{"family":"Bundled"}]},"request":{"method":"POST","url":"Patient"}},
			 {"fullUrl":"urn:uuid:0b7e4b9e-6a0a-4f44-9d59-1c8f6f7c3a02","resource":{"resourceType":"Observation","status":"final","code":{"text":"pain"},
			  "subject":{"reference":"urn:uuid:0b7e4b9e-6a0a-4f44-9d59-1c8f6f7c3a01"}},"request":{"method":"POST","url":"Observation"}}]}`
			bpath := filepath.Join(t.TempDir(), "bundle.json")
			if err := os.WriteFile(bpath, []byte(bundle), 0o600); err != nil {
				t.Fatal(err)
			}
			if rep, err = srv.Importer().ImportPaths(context.Background(), []string{bpath}, fhir.ImportOptions{}); err != nil || rep.Stored != 2 || rep.Failed != 0 {
				t.Fatalf("bundle import: %v, stored %d: %+v", err, rep.Stored, rep.Failures)
			}
			ref, _ := get(c.do("GET", "/Observation", "").expect(t, http.StatusOK).json(t), "entry", 0, "resource", "subject", "reference").(string)
			if fam := get(c.do("GET", "/"+ref, "").expect(t, http.StatusOK).json(t), "name", 0, "family"); fam != "Bundled" {
				t.Errorf("the Observation's subject %q is not the Bundle's Patient", ref)
			}
		})
	}
}
