package fhir

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// denyAll refuses every decision and counts the decisions it was asked.
type denyAll struct{ asked atomic.Int64 }

const denyReason = "refused-by-the-probe-policy"

func (d *denyAll) Decide(context.Context, string, string) (auth.Decision, error) {
	d.asked.Add(1)
	return auth.Decision{Allowed: false, Reason: denyReason}, nil
}

// A policyProbe is a request naming one route; entry says whether the
// same request is also sent as a batch entry.
type policyProbe struct {
	method, path, body, ctype string
	entry                     bool
}

// TestPolicyEveryRoute enumerates the routes Echo has registered (the
// route table, the patient and resource operations, OperationDefinition)
// under an Authorizer that refuses everything: every route must answer
// the refusal, over HTTP and, where it is a batch entry, as an entry of a
// batch, or be exempt here with a reason. A route that reaches data
// without asking Policy.Decide answers something else and fails, and so
// does a route added without a probe.
func TestPolicyEveryRoute(t *testing.T) {
	ctx := context.Background()
	be, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	var ran atomic.Int64
	deny := &denyAll{}
	ts := httptest.NewUnstartedServer(nil)
	s, err := New(Config{
		BaseURL: "http://" + ts.Listener.Addr().String(), Backend: be, Authorizer: deny,
		// A known caller (bulk export refuses an anonymous one before
		// deciding), whom the policy refuses everything.
		Middleware: func(next echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error {
				r := c.Request()
				c.SetRequest(r.WithContext(auth.WithPrincipal(r.Context(), &auth.Principal{Issuer: "urn:probe", ClientID: "probe", Subject: "probe"})))
				return next(c)
			}
		},
		ExportDir: t.TempDir(), ExportWorkers: 1,
		ResourceOperations: []ResourceOperation{{Type: "Observation", Name: "probe", Definition: map[string]any{"resourceType": "OperationDefinition", "id": "observation-probe", "url": "urn:observation-probe"},
			Run: func(context.Context, storage.Record, url.Values) (map[string]any, error) {
				ran.Add(1)
				return map[string]any{"resourceType": "Parameters"}, nil
			}}},
		PatientOperations: []PatientOperation{{Name: "probe", Definition: map[string]any{"resourceType": "OperationDefinition", "id": "probe", "url": "urn:probe"},
			Run: func(context.Context, *PatientReader, url.Values) (map[string]any, error) {
				ran.Add(1)
				return map[string]any{"resourceType": "Parameters"}, nil
			}}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts.Config.Handler = s.Handler()
	ts.Start()
	defer ts.Close()
	for _, body := range []string{
		`{"resourceType":"Patient","id":"p1","identifier":[{"system":"urn:t","value":"one"}]}`,
		`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}`,
		`{"resourceType":"Group","id":"g1","type":"person","actual":true,"member":[{"entity":{"reference":"Patient/p1"}}]}`,
	} {
		parsed, issues := s.validator.Validate(ctx, []byte(body))
		if len(issues) > 0 {
			t.Fatalf("seed: %v", issues)
		}
		w, err := s.prepare(parsed.Type, parsed.ID, parsed.Resource, 0, now(), http.MethodPut)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.commitOne(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	call := func(p policyProbe) (int, string) {
		t.Helper()
		var rd io.Reader
		if p.body != "" {
			rd = strings.NewReader(p.body)
		}
		req, err := http.NewRequest(p.method, ts.URL+"/fhir"+p.path, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "application/fhir+json")
		req.Header.Set("Prefer", "respond-async")
		if p.body != "" {
			ct := p.ctype
			if ct == "" {
				ct = "application/fhir+json"
			}
			req.Header.Set("Content-Type", ct)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	form := "application/x-www-form-urlencoded"
	patch := `[{"op":"replace","path":"/status","value":"amended"}]`
	lastnParams := `{"resourceType":"Parameters","parameter":[{"name":"subject","valueString":"Patient/p1"},{"name":"code:text","valueString":"x"}]}`
	statsParams := `{"resourceType":"Parameters","parameter":[{"name":"code","valueString":"x"},{"name":"statistic","valueCode":"count"}]}`
	probes := map[string]policyProbe{
		"GET /_history":                  {"GET", "/_history", "", "", true},
		"GET ":                           {"GET", "?_type=Patient", "", "", false},
		"GET /":                          {"GET", "/?_type=Patient", "", "", false},
		"POST /_search":                  {"POST", "/_search", "_type=Patient", form, false},
		"GET /:type/:id/:comp":           {"GET", "/Patient/p1/Observation", "", "", true},
		"GET /:type/:id/$reindex-status": {"GET", "/SearchParameter/sp1/$reindex-status", "", "", true},
		"POST /:type":                    {"POST", "/Patient", `{"resourceType":"Patient"}`, "", true},
		"GET /:type":                     {"GET", "/Observation?subject=Patient/p1", "", "", true},
		"POST /:type/_search":            {"POST", "/Observation/_search", "subject=Patient/p1", form, false},
		"GET /:type/_history":            {"GET", "/Observation/_history", "", "", true},
		"PUT /:type":                     {"PUT", "/Patient?identifier=urn:t|one", `{"resourceType":"Patient"}`, "", true},
		"DELETE /:type":                  {"DELETE", "/Patient?identifier=urn:t|one", "", "", true},
		"GET /Observation/$lastn":        {"GET", "/Observation/$lastn?subject=Patient/p1&code:text=x", "", "", true},
		"POST /Observation/$lastn":       {"POST", "/Observation/$lastn", lastnParams, "", true},
		"GET /Observation/$stats":        {"GET", "/Observation/$stats?code=x&statistic=count", "", "", true},
		"POST /Observation/$stats":       {"POST", "/Observation/$stats", statsParams, "", true},
		"GET /:type/$everything":         {"GET", "/Patient/$everything", "", "", true},
		"GET /:type/:id/$everything":     {"GET", "/Patient/p1/$everything", "", "", true},
		"GET /:type/:id":                 {"GET", "/Observation/o1", "", "", true},
		"GET /:type/:id/_history/:vid":   {"GET", "/Observation/o1/_history/1", "", "", true},
		"PUT /:type/:id":                 {"PUT", "/Observation/o1", `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"y"}}`, "", true},
		"PATCH /:type/:id":               {"PATCH", "/Observation/o1", patch, "application/json-patch+json", true},
		"DELETE /:type/:id":              {"DELETE", "/Observation/o1", "", "", true},
		"GET /:type/:id/_history":        {"GET", "/Observation/o1/_history", "", "", true},
		"POST /:type/:id/$validate":      {"POST", "/Observation/o1/$validate", "", "", true},
		"GET /$export":                   {"GET", "/$export", "", "", false},
		"GET /Patient/$export":           {"GET", "/Patient/$export", "", "", false},
		"GET /Group/:id/$export":         {"GET", "/Group/g1/$export", "", "", false},
		"GET /Patient/:id/$probe":        {"GET", "/Patient/p1/$probe", "", "", true},
		"GET /Observation/:id/$probe":    {"GET", "/Observation/o1/$probe", "", "", true},
		"POST /Observation/:id/$probe":   {"POST", "/Observation/o1/$probe", `{"resourceType":"Parameters"}`, "", true},
		"GET /OperationDefinition/:id":   {"GET", "/OperationDefinition/od1", "", "", true},
		"POST /$import":                  {"POST", "/$import", `{"resourceType":"Patient","id":"p9"}` + "\n", "application/fhir+ndjson", false},
	}
	exempt := map[string]string{
		"GET /metadata":                "the CapabilityStatement is public (capabilities needs no token)",
		"POST /:type/$validate":        "validates the posted body; reads nothing stored",
		"GET /$export-status/:job":     "answers the job's own requester only (ownJob); the kick-off was decided",
		"DELETE /$export-status/:job":  "the same",
		"GET /$export-file/:job/:file": "the same",
		"POST ":                        "the batch itself: every entry is probed below",
		"POST /":                       "a transaction: probed below",
	}
	for _, r := range s.echo.Routes() {
		path, ok := strings.CutPrefix(r.Path, "/fhir")
		if !ok {
			continue // /healthz, /readyz
		}
		key := r.Method + " " + path
		p, ok := probes[key]
		if !ok {
			if _, ok := exempt[key]; !ok {
				t.Errorf("route %s has no Policy.Decide probe in this test: every route must ask the Authorizer", key)
			}
			continue
		}
		before := deny.asked.Load()
		st, raw := call(p)
		refused := st == http.StatusForbidden
		switch key {
		case "POST /$import":
			// The import answers per line: every line refused.
			refused = st == http.StatusUnprocessableEntity && strings.Contains(raw, "imported 0 resources, 1 failed") && strings.Contains(raw, denyReason)
		case "GET /_history":
			// System history leaves out the types the caller may not
			// read: here every one.
			refused = st == http.StatusOK && !strings.Contains(raw, `"entry"`)
		}
		if !refused || deny.asked.Load() == before {
			t.Errorf("%s under a policy refusing everything: status %d, want the policy's refusal: %s", key, st, raw)
		}
	}
	// The same requests as entries of one batch: each entry refused by the
	// policy.
	var keys []string
	var entries []string
	for key, p := range probes {
		if !p.entry {
			continue
		}
		req := map[string]any{"method": p.method, "url": strings.TrimPrefix(p.path, "/")}
		e := map[string]any{"request": req}
		switch {
		case p.method == http.MethodPatch:
			e["resource"] = map[string]any{"resourceType": "Binary", "contentType": "application/json-patch+json", "data": base64.StdEncoding.EncodeToString([]byte(p.body))}
		case p.body != "":
			e["resource"] = json.RawMessage(p.body)
		}
		keys = append(keys, key)
		entries = append(entries, mustJSON(e))
	}
	st, raw := call(policyProbe{method: "POST", path: "", body: `{"resourceType":"Bundle","type":"batch","entry":[` + strings.Join(entries, ",") + `]}`})
	var b struct {
		Entry []struct {
			Resource json.RawMessage
			Response struct {
				Status  string
				Outcome json.RawMessage
			}
		}
	}
	if err := json.Unmarshal([]byte(raw), &b); err != nil || st != http.StatusOK || len(b.Entry) != len(keys) {
		t.Fatalf("batch of every entry route: status %d: %s", st, raw)
	}
	for i, e := range b.Entry {
		refused := strings.HasPrefix(e.Response.Status, "403")
		if keys[i] == "GET /_history" {
			refused = strings.HasPrefix(e.Response.Status, "200") && !strings.Contains(string(e.Resource), `"entry"`)
		}
		if !refused {
			t.Errorf("%s as a batch entry under a policy refusing everything: %s %s", keys[i], e.Response.Status, e.Response.Outcome)
		}
	}
	// A transaction is refused as a whole.
	if st, raw := call(policyProbe{method: "POST", path: "/", body: txBody}); st != http.StatusForbidden || !strings.Contains(raw, denyReason) {
		t.Errorf("transaction under a policy refusing everything: status %d: %s", st, raw)
	}
	if n := ran.Load(); n != 0 {
		t.Errorf("an operation ran %d times under a policy refusing everything", n)
	}
}
