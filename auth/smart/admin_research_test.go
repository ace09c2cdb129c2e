package smart_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/auth/smart"
)

// TestAdminResearchClients: the admin API registers research clients with
// the two research fields, refuses incoherent ones, and lists them (all of
// them, or one project's).
func TestAdminResearchClients(t *testing.T) {
	e := newEnv(t)
	do := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, e.base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer admin-secret-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, body := range []string{
		`{"client_id":"study","type":"confidential-symmetric","scope":"system/Observation.rs system/Patient.rs","research_project":"knee-pain"}`,
		`{"client_id":"counts","type":"confidential-symmetric","scope":"system/Observation.rs","research_project":"knee-pain","research_access":"aggregates"}`,
		`{"client_id":"other","type":"confidential-symmetric","scope":"system/Observation.rs","research_project":"back_pain.2"}`,
		`{"client_id":"clinic","type":"confidential-symmetric","scope":"system/*.cruds"}`,
	} {
		if st, b := do(http.MethodPost, "/auth/admin/clients", body); st != 201 {
			t.Fatalf("register %s: %d %s", body, st, b)
		}
	}
	for _, bad := range []struct{ body, why string }{
		{`{"client_id":"b1","type":"confidential-symmetric","scope":"system/*.rs","research_access":"aggregates"}`, "research project"},
		{`{"client_id":"b2","type":"confidential-symmetric","scope":"system/*.rs","research_project":"p","research_access":"everything"}`, "rows or aggregates"},
		{`{"client_id":"b3","type":"confidential-symmetric","scope":"system/*.rs","research_project":"a/b"}`, "letters, digits"},
		{`{"client_id":"b4","type":"confidential-symmetric","scope":"system/*.rs","research_project":"-x"}`, "letters, digits"},
		{`{"client_id":"b5","type":"confidential-symmetric","scope":"system/*.rs","research_project":"` + strings.Repeat("p", 65) + `"}`, "letters, digits"},
		{`{"client_id":"b6","type":"confidential-symmetric","scope":"system/Observation.rs system/Observation.c","research_project":"p"}`, "never write"},
		{`{"client_id":"b7","type":"confidential-symmetric","scope":"system/*.cruds","research_project":"p"}`, "never write"},
		{`{"client_id":"b8","type":"confidential-symmetric","scope":"system/*.rs","research_project":"p","launch_ehr":true}`, "launch"},
		{`{"client_id":"b9","type":"confidential-symmetric","scope":"system/*.rs","research_project":"p","resource_server":true}`, "introspect"},
	} {
		if st, b := do(http.MethodPost, "/auth/admin/clients", bad.body); st != 400 || !strings.Contains(b, bad.why) {
			t.Errorf("register %s: %d %s, want 400 saying %q", bad.body, st, b, bad.why)
		}
	}
	list := func(query string) map[string]smart.Client {
		st, b := do(http.MethodGet, "/auth/admin/clients"+query, "")
		if st != 200 {
			t.Fatalf("list%s: %d %s", query, st, b)
		}
		var cl []smart.Client
		if err := json.Unmarshal([]byte(b), &cl); err != nil {
			t.Fatalf("list%s: %v: %s", query, err, b)
		}
		out := map[string]smart.Client{}
		for _, c := range cl {
			out[c.ID] = c
		}
		return out
	}
	all := list("")
	if c := all["study"]; c.ResearchProject != "knee-pain" || c.ResearchAccess != "" {
		t.Errorf("study listed as %+v", c)
	}
	if c := all["counts"]; c.ResearchProject != "knee-pain" || c.ResearchAccess != "aggregates" {
		t.Errorf("counts listed as %+v", c)
	}
	if got := list("?research_project=knee-pain"); len(got) != 2 || got["study"].ID == "" || got["counts"].ID == "" {
		t.Errorf("clients of knee-pain: %v", got)
	}
	if got := list("?research_project="); len(got) != 3 || got["clinic"].ID != "" {
		t.Errorf("research clients: %v", got)
	}
	if got := list("?research_project=nobody"); len(got) != 0 {
		t.Errorf("clients of an unknown project: %v", got)
	}
}
