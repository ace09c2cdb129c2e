package fhir

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// stampView marks every resource it sees and renames ids ("v-" + id), so
// a test can tell from a response alone whether the output passed it.
type stampView struct{}

const stampSystem = "urn:anodyne:test:output-filter"

func (stampView) Name() string { return "stamp" }

func (stampView) Resource(_ context.Context, res map[string]any) (map[string]any, error) {
	if id, ok := res["id"].(string); ok {
		res["id"] = "v-" + id
	}
	meta, _ := res["meta"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		res["meta"] = meta
	}
	tags, _ := meta["tag"].([]any)
	meta["tag"] = append(tags, map[string]any{"system": stampSystem, "code": "seen"})
	return res, nil
}

func (stampView) ID(_ context.Context, _, id string) (string, bool, error) {
	real, ok := strings.CutPrefix(id, "v-")
	return real, ok, nil
}

func (stampView) Search(_ context.Context, _ []string, params url.Values) (url.Values, error) {
	out := url.Values{}
	for k, vs := range params {
		for _, v := range vs {
			out.Add(k, strings.ReplaceAll(v, "/v-", "/"))
		}
	}
	return out, nil
}

type stampFilter struct{}

func (stampFilter) For(context.Context) (View, error) { return stampView{}, nil }
func (stampFilter) Named(_ context.Context, name string) (View, error) {
	if name != "stamp" {
		return nil, errBadRequest("unknown view %q", name)
	}
	return stampView{}, nil
}

// checkStamped walks a response and requires every resource in it (other
// than the Bundles, OperationOutcomes and Parameters the server builds) to carry the
// stamp and a view id; it returns how many it found.
func checkStamped(t *testing.T, what string, v any) int {
	t.Helper()
	n := 0
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if rt, ok := x["resourceType"].(string); ok && rt != "Bundle" && rt != "OperationOutcome" && rt != "Parameters" {
				n++
				if id, _ := x["id"].(string); id != "" && !strings.HasPrefix(id, "v-") {
					t.Errorf("%s: %s/%s left without the view's id", what, rt, id)
				}
				if !strings.Contains(mustJSON(x["meta"]), stampSystem) {
					t.Errorf("%s: %s/%v left without passing the output filter", what, rt, x["id"])
				}
			}
			if fu, ok := x["fullUrl"].(string); ok && !strings.Contains(fu, "/v-") {
				t.Errorf("%s: fullUrl %q names a stored id", what, fu)
			}
			for _, val := range x {
				walk(val)
			}
		case []any:
			for _, val := range x {
				walk(val)
			}
		}
	}
	walk(v)
	return n
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestOutputFilterEveryReadRoute enumerates the route table: every route
// either has a recipe below, which calls it and requires every resource in
// the answer to have passed the output filter, or is exempt with a
// reason. A route added without either fails the test.
func TestOutputFilterEveryReadRoute(t *testing.T) {
	ctx := context.Background()
	be, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	ts := httptest.NewUnstartedServer(nil)
	var s *Server
	s, err = New(Config{
		// A resource operation that answers its instance through Emit, as
		// ResourceOperation requires.
		ResourceOperations: []ResourceOperation{{Type: "Observation", Name: "probe", Definition: map[string]any{"resourceType": "OperationDefinition", "id": "observation-probe", "url": "urn:observation-probe"},
			Run: func(ctx context.Context, rec storage.Record, _ url.Values) (map[string]any, error) {
				raw, _, err := s.Emit(ctx, rec)
				if err != nil {
					return nil, err
				}
				return map[string]any{"resourceType": "Parameters", "parameter": []any{map[string]any{"name": "instance", "resource": json.RawMessage(raw)}}}, nil
			},
			// The type level: every instance handed to it, through Emit.
			RunType: func(ctx context.Context, recs []storage.Record, _ url.Values) (map[string]any, error) {
				var ps []any
				for _, rec := range recs {
					raw, _, err := s.Emit(ctx, rec)
					if err != nil {
						return nil, err
					}
					ps = append(ps, map[string]any{"name": "instance", "resource": json.RawMessage(raw)})
				}
				return map[string]any{"resourceType": "Parameters", "parameter": ps}, nil
			}}},
		BaseURL: "http://" + ts.Listener.Addr().String(), Backend: be,
		ExportDir: t.TempDir(), ExportWorkers: 1, Output: stampFilter{},
		// A patient operation that answers the resources it reads, as-is.
		PatientOperations: []PatientOperation{{Name: "probe", Definition: map[string]any{"resourceType": "OperationDefinition", "id": "probe", "url": "urn:probe"},
			Run: func(ctx context.Context, r *PatientReader, _ url.Values) (map[string]any, error) {
				obs, err := r.Search(ctx, "Observation", nil)
				if err != nil {
					return nil, err
				}
				var ps []any
				for _, o := range obs {
					ps = append(ps, map[string]any{"name": "read", "resource": o})
				}
				return map[string]any{"resourceType": "Parameters", "parameter": ps}, nil
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
	base := ts.URL + "/fhir"

	call := func(method, path, body string, hdr ...string) (int, []byte) {
		t.Helper()
		u := path
		if !strings.HasPrefix(u, "http") {
			u = base + path
		}
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, u, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "application/fhir+json")
		if body != "" {
			req.Header.Set("Content-Type", "application/fhir+json")
		}
		for _, h := range hdr {
			k, v, _ := strings.Cut(h, ": ")
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, raw
	}
	// Seed directly (the REST write paths would answer through the view).
	for _, body := range []string{
		`{"resourceType":"Patient","id":"p1","identifier":[{"system":"urn:t","value":"one"}]}`,
		`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}`,
		`{"resourceType":"Group","id":"g1","type":"person","actual":true,"member":[{"entity":{"reference":"Patient/p1"}}]}`,
		`{"resourceType":"Observation","id":"o9","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"72514-3"}]},"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":3}}`,
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
	repr := "Prefer: return=representation"
	export := func(path string) func() (int, []byte) {
		return func() (int, []byte) {
			st, raw := call("GET", path, "", "Prefer: respond-async")
			if st != http.StatusAccepted {
				return st, raw
			}
			req, _ := http.NewRequest("GET", base+path, nil)
			req.Header.Set("Prefer", "respond-async")
			req.Header.Set("Accept", "application/fhir+json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			status := resp.Header.Get("Content-Location")
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				st, raw := call("GET", status, "")
				if st == http.StatusAccepted {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				var m struct {
					Output []struct{ URL string } `json:"output"`
				}
				if err := json.Unmarshal(raw, &m); err != nil || st != http.StatusOK {
					return st, raw
				}
				// The NDJSON lines become a JSON array for checkStamped.
				var all []string
				for _, o := range m.Output {
					_, body := call("GET", o.URL, "")
					for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
						all = append(all, line)
					}
				}
				return http.StatusOK, []byte("[" + strings.Join(all, ",") + "]")
			}
			t.Fatalf("export %s did not finish", path)
			return 0, nil
		}
	}
	// Writes name stored ids (a view is for callers who read; research
	// clients cannot write); what they answer still passes the view.
	recipes := map[string]func() (int, []byte){
		"POST ": func() (int, []byte) {
			st, raw := call("POST", "", batchBody)
			// Every entry must answer, or the check below sees too little.
			var b struct {
				Entry []struct {
					Resource json.RawMessage         `json:"resource"`
					Response struct{ Status string } `json:"response"`
				} `json:"entry"`
			}
			if err := json.Unmarshal(raw, &b); err == nil {
				for i, e := range b.Entry {
					if !strings.HasPrefix(e.Response.Status, "200") || !strings.Contains(string(e.Resource), stampSystem) {
						t.Errorf("batch entry %d: %s", i, e.Response.Status)
					}
				}
			}
			return st, raw
		},
		"POST /":        func() (int, []byte) { return call("POST", "/", txBody, repr) },
		"GET /_history": func() (int, []byte) { return call("GET", "/_history", "") },
		"GET ":          func() (int, []byte) { return call("GET", "?_type=Patient,Observation", "") },
		"GET /":         func() (int, []byte) { return call("GET", "/?_type=Observation", "") },
		"POST /_search": func() (int, []byte) {
			return call("POST", "/_search", "_type=Observation", "Content-Type: application/x-www-form-urlencoded")
		},
		"GET /:type/:id/:comp": func() (int, []byte) { return call("GET", "/Patient/v-p1/Observation", "") },
		"POST /:type":          func() (int, []byte) { return call("POST", "/Patient", `{"resourceType":"Patient"}`, repr) },
		"GET /:type": func() (int, []byte) {
			return call("GET", "/Observation?subject=Patient/v-p1&_include=Observation:subject&_revinclude=Group:member&_elements=status", "")
		},
		"POST /:type/_search": func() (int, []byte) {
			return call("POST", "/Observation/_search", "subject=Patient/v-p1", "Content-Type: application/x-www-form-urlencoded")
		},
		"GET /:type/_history": func() (int, []byte) { return call("GET", "/Observation/_history", "") },
		"PUT /:type": func() (int, []byte) {
			return call("PUT", "/Patient?identifier=urn:t|one", `{"resourceType":"Patient","identifier":[{"system":"urn:t","value":"one"}]}`, repr)
		},
		"GET /Observation/$lastn": func() (int, []byte) {
			return call("GET", "/Observation/$lastn?subject=Patient/v-p1&code:text=x&_include=Observation:subject", "")
		},
		"POST /Observation/$lastn": func() (int, []byte) {
			return call("POST", "/Observation/$lastn", "subject=Patient/v-p1&code:text=x", "Content-Type: application/x-www-form-urlencoded")
		},
		"GET /:type/$everything":      func() (int, []byte) { return call("GET", "/Patient/$everything", "") },
		"GET /Observation/:id/$probe": func() (int, []byte) { return call("GET", "/Observation/v-o1/$probe", "") },
		"GET /Observation/$probe":     func() (int, []byte) { return call("GET", "/Observation/$probe?id=v-o1", "") },
		"POST /Observation/$probe": func() (int, []byte) {
			return call("POST", "/Observation/$probe", "", "Content-Type: application/x-www-form-urlencoded")
		},
		"POST /Observation/:id/$probe": func() (int, []byte) {
			return call("POST", "/Observation/v-o1/$probe", "x=1", "Content-Type: application/x-www-form-urlencoded")
		},
		// The statistics Observations are built by the server (no stored
		// content); the source Observations must pass the view.
		"GET /Observation/$stats": func() (int, []byte) {
			return statsSources(call("GET", "/Observation/$stats?coding=http://loinc.org|72514-3&statistic=count&include=true&patient=Group/v-g1", ""))
		},
		"POST /Observation/$stats": func() (int, []byte) {
			return statsSources(call("POST", "/Observation/$stats", `{"resourceType":"Parameters","parameter":[
 {"name":"coding","valueCoding":{"system":"http://loinc.org","code":"72514-3"}},{"name":"statistic","valueCode":"count"},
 {"name":"include","valueBoolean":true},{"name":"patient","valueReference":{"reference":"Group/v-g1"}}]}`))
		},
		"GET /:type/:id/$everything": func() (int, []byte) { return call("GET", "/Patient/v-p1/$everything", "") },
		"GET /:type/:id":             func() (int, []byte) { return call("GET", "/Observation/v-o1", "") },
		"GET /:type/:id/_history/:vid": func() (int, []byte) {
			return call("GET", "/Observation/v-o1/_history/1", "")
		},
		"PUT /:type/:id": func() (int, []byte) {
			return call("PUT", "/Observation/o2", `{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"y"}}`, repr)
		},
		"PATCH /:type/:id": func() (int, []byte) {
			return call("PATCH", "/Observation/o1", `[{"op":"replace","path":"/status","value":"amended"}]`, repr, "Content-Type: application/json-patch+json")
		},
		"GET /:type/:id/_history": func() (int, []byte) { return call("GET", "/Patient/v-p1/_history", "") },
		"GET /$export":            export("/$export"),
		"GET /Patient/$export":    export("/Patient/$export"),
		"GET /Group/:id/$export":  export("/Group/v-g1/$export"),
	}
	exempt := map[string]string{
		"GET /metadata":                  "the server's own CapabilityStatement, no stored content",
		"GET /:type/:id/$reindex-status": "indexing progress (a Parameters the server builds), no stored content",
		"POST /:type/$validate":          "validates the request body, answers an OperationOutcome",
		"POST /:type/:id/$validate":      "refused under a view (checked below)",
		"DELETE /:type":                  "answers no resource",
		"DELETE /:type/:id":              "answers no resource",
		"GET /$export-status/:job":       "a manifest; the files it lists are checked by the $export recipes",
		"DELETE /$export-status/:job":    "answers no resource",
		"GET /$export-file/:job/:file":   "checked by the $export recipes, which download every file",
		"POST /$import":                  "a write, answers an OperationOutcome",
		"GET /Patient/:id/$probe":        "patient operations are refused under a view (checked below)",
		"GET /OperationDefinition/:id":   "the server's own definitions; a stored one is read as GET /:type/:id",
	}
	for _, r := range s.echo.Routes() {
		path, ok := strings.CutPrefix(r.Path, "/fhir")
		if !ok {
			continue // /healthz, /readyz
		}
		key := r.Method + " " + path
		recipe, ok := recipes[key]
		if !ok {
			if _, ok := exempt[key]; !ok {
				t.Errorf("route %s has no output-filter recipe in this test: every read route must emit through Server.emit", key)
			}
			continue
		}
		st, raw := recipe()
		if st >= 300 {
			t.Errorf("%s: status %d: %s", key, st, raw)
			continue
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Errorf("%s: %v: %s", key, err, raw)
			continue
		}
		if n := checkStamped(t, key, v); n == 0 {
			t.Errorf("%s: the answer holds no resource to check: %s", key, raw)
		}
	}
	// $stats as a batch entry: the statistics Observations are the
	// server's own, the sources must have passed the view.
	st, raw := call("POST", "", statsBatchBody)
	var sb struct {
		Entry []struct {
			Resource struct {
				Parameter []struct {
					Name     string          `json:"name"`
					Resource json.RawMessage `json:"resource"`
				} `json:"parameter"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &sb); err != nil || st != http.StatusOK || len(sb.Entry) != 1 {
		t.Errorf("$stats batch entry: status %d: %s", st, raw)
	} else {
		var sources []any
		for _, pm := range sb.Entry[0].Resource.Parameter {
			if pm.Name == "source" {
				var v any
				if err := json.Unmarshal(pm.Resource, &v); err != nil {
					t.Fatal(err)
				}
				sources = append(sources, v)
			}
		}
		if n := checkStamped(t, "$stats batch entry", sources); n == 0 {
			t.Errorf("$stats batch entry answers no source: %s", raw)
		}
	}
	// The view's ids are the only names: a stored id matches nothing.
	if st, _ := call("GET", "/Observation/o1", ""); st != http.StatusNotFound {
		t.Errorf("read by stored id under a view: status %d, want 404", st)
	}
	for _, id := range []string{"v-p1", "p1"} {
		if st, raw := call("GET", "/Patient/"+id+"/$probe", ""); st != http.StatusForbidden {
			t.Errorf("patient operation on Patient/%s under a view: status %d, want 403: %s", id, st, raw)
		}
	}
	st, raw = call("POST", "", `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient/p1/$probe"}}]}`)
	if st != http.StatusOK || !strings.Contains(string(raw), `"403 Forbidden"`) {
		t.Errorf("patient operation entry under a view: status %d, want an entry refused with 403: %s", st, raw)
	}
	// A resource operation as a batch entry answers through the view too.
	st, raw = call("POST", "", `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Observation/v-o1/$probe"}}]}`)
	var rb any
	if err := json.Unmarshal(raw, &rb); err != nil || st != http.StatusOK || !strings.Contains(string(raw), `"200 OK"`) {
		t.Errorf("resource operation entry under a view: status %d: %s", st, raw)
	} else if n := checkStamped(t, "resource operation entry", rb); n == 0 {
		t.Errorf("resource operation entry answers no resource: %s", raw)
	}
	if st, _ := call("POST", "/Observation/v-o1/$validate", ""); st != http.StatusForbidden {
		t.Errorf("$validate of a stored resource under a view: status %d, want 403", st)
	}
}

const batchBody = `{"resourceType":"Bundle","type":"batch","entry":[
 {"request":{"method":"GET","url":"Observation/v-o1"}},
 {"request":{"method":"GET","url":"Observation?subject=Patient/v-p1"}},
 {"request":{"method":"GET","url":"Observation/$lastn?subject=Patient/v-p1&code:text=x&_include=Observation:subject"}},
 {"request":{"method":"POST","url":"Observation/$lastn?_include=Observation:subject"},"resource":{"resourceType":"Parameters","parameter":[
  {"name":"subject","valueReference":{"reference":"Patient/v-p1"}},{"name":"code:text","valueString":"x"}]}},
 {"request":{"method":"POST","url":"Observation/v-o1/$probe"},"resource":{"resourceType":"Parameters","parameter":[{"name":"x","valueString":"1"}]}}]}`

// statsBatchBody asks $stats, with its sources, as a batch entry.
const statsBatchBody = `{"resourceType":"Bundle","type":"batch","entry":[
 {"request":{"method":"GET","url":"Observation/$stats?coding=http://loinc.org|72514-3&statistic=count&include=true&patient=Group/v-g1"}}]}`

const txBody = `{"resourceType":"Bundle","type":"transaction","entry":[
 {"fullUrl":"urn:uuid:7f2b9a0e-1c1d-4a57-9d55-0a9f3b1e6c01","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},
 {"request":{"method":"GET","url":"Patient/v-p1"}}]}`

// statsSources keeps, of a $stats answer, the source Observations (the
// statistics Observations are built by the server, with no stored content).
func statsSources(st int, raw []byte) (int, []byte) {
	var p struct {
		Parameter []struct {
			Name     string          `json:"name"`
			Resource json.RawMessage `json:"resource"`
		} `json:"parameter"`
	}
	if err := json.Unmarshal(raw, &p); err != nil || st != http.StatusOK {
		return st, raw
	}
	var sources []string
	for _, pm := range p.Parameter {
		if pm.Name == "source" {
			sources = append(sources, string(pm.Resource))
		}
	}
	return st, []byte("[" + strings.Join(sources, ",") + "]")
}
