package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runCmd runs one anodyne command line and returns its stdout.
func runCmd(t *testing.T, wantErr bool, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut, func(string) string { return "" }, nil)
	if (err != nil) != wantErr {
		t.Fatalf("anodyne %s: err %v (want error: %v)\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, wantErr, out.String(), errOut.String())
	}
	return out.String()
}

var importedRe = regexp.MustCompile(`imported (\d+) resources`)

func importedCount(t *testing.T, out string) int {
	t.Helper()
	m := importedRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no import summary in %q", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// readExport reads every NDJSON file of dir into id -> resource without
// meta.versionId/lastUpdated, which an import is free to change.
func readExport(t *testing.T, dir string) map[string]string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	out := map[string]string{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			d := json.NewDecoder(bytes.NewReader(sc.Bytes()))
			d.UseNumber()
			var res map[string]any
			if err := d.Decode(&res); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if meta, ok := res["meta"].(map[string]any); ok {
				delete(meta, "versionId")
				delete(meta, "lastUpdated")
				if len(meta) == 0 {
					delete(res, "meta")
				}
			}
			norm, _ := json.Marshal(res)
			out[res["resourceType"].(string)+"/"+res["id"].(string)] = string(norm)
		}
	}
	return out
}

// TestImportExportCommands loads the Synthea Bundles with "anodyne
// import" straight into one database, exports them with "anodyne export",
// imports the export into a running server with --server, exports that
// server with --server, and compares the two exports.
func TestImportExportCommands(t *testing.T) {
	tmp := t.TempDir()
	dbA, outA, outB := filepath.Join(tmp, "a"), filepath.Join(tmp, "outA"), filepath.Join(tmp, "outB")

	n := importedCount(t, runCmd(t, false, "import", "--data-dir", dbA, "--quiet", "../../testdata/synthea"))
	if n == 0 {
		t.Fatal("nothing imported")
	}
	// Running it again does nothing: every file is recorded as imported.
	if again := importedCount(t, runCmd(t, false, "import", "--data-dir", dbA, "--quiet", "../../testdata/synthea")); again != 0 {
		t.Errorf("second import stored %d", again)
	}
	out := runCmd(t, false, "export", "--data-dir", dbA, outA)
	exportA := readExport(t, outA)
	if len(exportA) != n || !strings.Contains(out, "exported "+strconv.Itoa(n)+" resources") {
		t.Fatalf("direct export has %d resources, imported %d; output %s", len(exportA), n, out)
	}
	obs := runCmd(t, false, "export", "--data-dir", dbA, "--type", "Observation", "--type-filter", "Observation?code=http://loinc.org|8302-2", filepath.Join(tmp, "obs"))
	if !strings.HasPrefix(obs, "Observation\t") || strings.Count(obs, "\n") != 2 {
		t.Errorf("filtered export: %s", obs)
	}

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(tmp, "b"), "--auth=off", "--audit=off", "--log-level=warn"}, io.Discard, io.Discard, func(string) string { return "" }, ready)
	}()
	var base string
	select {
	case addr := <-ready:
		base = "http://" + addr + "/fhir"
	case err := <-done:
		t.Fatalf("serve exited: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not start")
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	state := filepath.Join(tmp, "state.json")
	if got := importedCount(t, runCmd(t, false, "import", "--server", base, "--state", state, "--batch", "40", "--quiet", outA)); got != n {
		t.Fatalf("remote import stored %d of %d", got, n)
	}
	if got := importedCount(t, runCmd(t, false, "import", "--server", base, "--state", state, "--quiet", outA)); got != 0 {
		t.Errorf("resumed remote import stored %d again", got)
	}
	runCmd(t, false, "export", "--server", base, "--quiet", outB)
	exportB := readExport(t, outB)
	// The served store also holds the profiles and subscription topics
	// (Basic) serve publishes at start.
	for k := range exportB {
		if _, imported := exportA[k]; !imported && published(k) {
			delete(exportB, k)
		}
	}
	if len(exportB) != len(exportA) {
		t.Fatalf("server export has %d resources, want %d", len(exportB), len(exportA))
	}
	for k, a := range exportA {
		if exportB[k] != a {
			t.Fatalf("%s differs after export, import and export:\n%s\n%s", k, a, exportB[k])
		}
	}

	// Lines that cannot be imported are reported with file, line and reason.
	bad := filepath.Join(tmp, "bad.ndjson")
	os.WriteFile(bad, []byte(`{"resourceType":"Patient","id":"ok1"}`+"\n"+`{"resourceType":"Patient","id":"x","birthDate":"yesterday"}`+"\n"+`{"resourceType":"Patient","id":"ok2"}`+"\n"), 0o600)
	out = runCmd(t, true, "import", "--server", base, "--state", state, "--quiet", bad)
	if importedCount(t, out) != 2 || !strings.Contains(out, "FAILED "+bad+":2") || !strings.Contains(out, "birthDate") {
		t.Errorf("failure report: %s", out)
	}
	out = runCmd(t, true, "import", "--data-dir", dbA, "--quiet", bad)
	if importedCount(t, out) != 2 || !strings.Contains(out, "FAILED "+bad+":2") {
		t.Errorf("direct failure report: %s", out)
	}
}

// TestBulkWithSmartTokens runs import and export against the secure
// default server with real backend-services tokens: an ETL client loads
// and exports; another client cannot see the ETL client's job or files,
// and a read-only client cannot import.
func TestBulkWithSmartTokens(t *testing.T) {
	dir := t.TempDir()
	key, jwks := es384(t)
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, "clients", "add", "--data-dir", dir, "--id", "etl", "--type", "confidential-asymmetric", "--jwks-file", jwksFile, "--scope", "system/*.cruds")
	cli(t, "clients", "add", "--data-dir", dir, "--id", "reader", "--type", "confidential-asymmetric", "--jwks-file", jwksFile, "--scope", "system/*.rs")
	srv := startServe(t, "--data-dir", dir, "--audit=off")
	etl := backendToken(t, srv.base, "etl", key, "system/*.cruds")
	reader := backendToken(t, srv.base, "reader", key, "system/*.rs")
	fhirBase := srv.base + "/fhir"

	n := importedCount(t, runCmd(t, false, "import", "--server", fhirBase, "--token", etl, "--state", filepath.Join(dir, "st.json"), "--quiet", "../../testdata/synthea"))
	readOnly := []string{"import", "--server", fhirBase, "--token", reader, "--state", filepath.Join(dir, "st2.json"), "--quiet", "../../testdata/synthea"}
	if out := runCmd(t, true, readOnly...); importedCount(t, out) != 0 {
		t.Errorf("a read-only client imported: %s", out)
	}
	// It stops at the refusal, saying why, and nothing counts as done: a
	// second try is refused the same way instead of skipping the files.
	if msg := runErr(t, readOnly...); !strings.Contains(msg, "403") || !strings.Contains(msg, "scopes") {
		t.Errorf("read-only import: %q, want the 403 and the scopes named", msg)
	}
	runCmd(t, true, "export", "--server", fhirBase, "--quiet", filepath.Join(dir, "anon"))

	// Kick off as etl, then try the job as reader.
	res, _ := call(t, http.MethodGet, fhirBase+"/$export?_type=Patient", etl, map[string]string{"Prefer": "respond-async"}, nil)
	status := res.Header.Get("Content-Location")
	if res.StatusCode != http.StatusAccepted || status == "" {
		t.Fatalf("kick-off: %d", res.StatusCode)
	}
	var files []string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		res, m := call(t, http.MethodGet, status, etl, nil, nil)
		if res.StatusCode == http.StatusOK {
			if m["requiresAccessToken"] != true {
				t.Errorf("manifest: %v", m)
			}
			for _, o := range m["output"].([]any) {
				files = append(files, o.(map[string]any)["url"].(string))
			}
			break
		}
	}
	if len(files) != 1 {
		t.Fatalf("files %v", files)
	}
	for _, u := range []string{status, files[0]} {
		if res, _ := call(t, http.MethodGet, u, reader, nil, nil); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s as another client: %d", u, res.StatusCode)
		}
		if res, _ := call(t, http.MethodGet, u, "", nil, nil); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d", u, res.StatusCode)
		}
	}
	if res, _ := call(t, http.MethodGet, files[0], etl, map[string]string{"Accept": "application/fhir+ndjson"}, nil); res.StatusCode != http.StatusOK {
		t.Errorf("GET file as owner: %d", res.StatusCode)
	}

	got := readExport(t, func() string {
		d := filepath.Join(dir, "out")
		runCmd(t, false, "export", "--server", fhirBase, "--token", reader, "--quiet", d)
		return d
	}())
	// The server publishes its profiles as StructureDefinitions and its
	// subscription topics as Basic resources, which the export holds too.
	for k := range got {
		if published(k) {
			delete(got, k)
		}
	}
	if len(got) != n {
		t.Errorf("reader exported %d resources, etl imported %d", len(got), n)
	}
}

// published tells the resources serve writes itself at start ("Type/id"):
// its profiles and its subscription topics.
func published(key string) bool {
	return strings.HasPrefix(key, "StructureDefinition/") || strings.HasPrefix(key, "Basic/anodyne-topic-")
}
