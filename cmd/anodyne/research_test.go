package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestResearchClientThroughCLI: a research client registered with the CLI
// gets a real backend-services token from the built-in server, whose
// project reaches the decision point and the de-identifier: it reads
// de-identified data under pseudonyms, cannot write, and an aggregates
// client gets no row.
func TestResearchClientThroughCLI(t *testing.T) {
	dir := t.TempDir()
	key, jwks := es384(t)
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	add := func(id, scope string, extra ...string) {
		cli(t, append([]string{"clients", "add", "--data-dir", dir, "--id", id, "--type", "confidential-asymmetric", "--jwks-file", jwksFile, "--scope", scope}, extra...)...)
	}
	add("etl", "system/*.cruds")
	add("study", "system/*.rs", "--research-project", "knee-pain")
	add("stats", "system/*.rs", "--research-project", "knee-pain", "--research-access", "aggregates")
	list := cli(t, "clients", "list", "--data-dir", dir)
	if !strings.Contains(list, "knee-pain (rows)") || !strings.Contains(list, "knee-pain (aggregates)") {
		t.Errorf("clients list does not show the research clients:\n%s", list)
	}
	srv := startServe(t, "--data-dir", dir, "--audit=off")
	etl := backendToken(t, srv.base, "etl", key, "system/*.cruds")
	study := backendToken(t, srv.base, "study", key, "system/*.rs")
	stats := backendToken(t, srv.base, "stats", key, "system/*.rs")

	patient := map[string]any{"resourceType": "Patient", "id": "p1", "name": []any{map[string]any{"family": "Quixotewell"}}, "birthDate": "1970-04-02"}
	if res, b := call(t, http.MethodPut, srv.base+"/fhir/Patient/p1", etl, nil, patient); res.StatusCode != http.StatusCreated {
		t.Fatalf("PUT Patient: %d %v", res.StatusCode, b)
	}
	res, b := call(t, http.MethodGet, srv.base+"/fhir/Patient", study, nil, nil)
	raw, _ := json.Marshal(b)
	if res.StatusCode != http.StatusOK || strings.Contains(string(raw), "Quixotewell") || strings.Contains(string(raw), "Patient/p1") || !strings.Contains(string(raw), `"PSEUDED"`) {
		t.Errorf("research search: %d %s", res.StatusCode, raw)
	}
	if res, _ := call(t, http.MethodGet, srv.base+"/fhir/Patient/p1", study, nil, nil); res.StatusCode != http.StatusNotFound {
		t.Errorf("research read by real id: %d, want 404", res.StatusCode)
	}
	if res, _ := call(t, http.MethodPut, srv.base+"/fhir/Patient/p1", study, nil, patient); res.StatusCode != http.StatusForbidden {
		t.Errorf("research write: %d, want 403", res.StatusCode)
	}
	if res, _ := call(t, http.MethodGet, srv.base+"/fhir/Patient", stats, nil, nil); res.StatusCode != http.StatusForbidden {
		t.Errorf("aggregates client search: %d, want 403", res.StatusCode)
	}
	if res, b := call(t, http.MethodGet, srv.base+"/fhir/Patient/p1", etl, nil, nil); res.StatusCode != http.StatusOK || b["name"] == nil {
		t.Errorf("clinician read: %d %v", res.StatusCode, b)
	}
}

// TestBadDeidRulesStopStartUp: a rules file that names an unknown method
// stops the server before it listens, with the line and the reason.
func TestBadDeidRulesStopStartUp(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.json")
	if err := os.WriteFile(rules, []byte("{\"version\": \"x\",\n \"rules\": [\n  {\"path\": \"Patient.name\", \"method\": \"shred\"}\n]}"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--deid-rules", rules}, &out, &errOut, func(string) string { return "" }, nil)
	if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), `unknown method "shred"`) {
		t.Errorf("serve with a bad rules file: %v", err)
	}
}
