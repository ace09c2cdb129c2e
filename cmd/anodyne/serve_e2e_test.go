package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// fhirCall sends a FHIR JSON body (or none) through call.
func fhirCall(t *testing.T, method, u, body string) (int, map[string]any) {
	t.Helper()
	var b any
	if body != "" {
		b = json.RawMessage(body)
	}
	res, out := call(t, method, u, "", nil, b)
	return res.StatusCode, out
}

const positionExt = "http://example.org/fhir/StructureDefinition/body-position"

func positionObservation(id, position string) string {
	return `{"resourceType":"Observation","id":"` + id + `","status":"final",
		"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},
		"extension":[{"url":"` + positionExt + `","valueCode":"` + position + `"}]}`
}

// TestServeCustomSearchParameter checks that "anodyne serve" runs the
// custom SearchParameter loop: a SearchParameter POSTed over REST on an
// Observation extension gets reindexed to "active" and then selects the
// Observations written before it, and new writes are indexed too.
func TestServeCustomSearchParameter(t *testing.T) {
	srv := startServe(t, "--auth=off", "--data-dir", t.TempDir(), "--searchparameter-poll", "50ms")
	base := srv.base + "/fhir"
	for id, pos := range map[string]string{"sit1": "sitting", "stand1": "standing", "sit2": "sitting"} {
		if code, out := fhirCall(t, "PUT", base+"/Observation/"+id, positionObservation(id, pos)); code != http.StatusCreated {
			t.Fatalf("PUT Observation/%s: %d %v", id, code, out)
		}
	}
	sp := `{"resourceType":"SearchParameter","url":"http://example.org/fhir/SearchParameter/observation-body-position",
		"name":"BodyPosition","status":"active","description":"Body position during the measurement","code":"body-position",
		"base":["Observation"],"type":"token",
		"expression":"Observation.extension.where(url='` + positionExt + `').value"}`
	code, created := fhirCall(t, "POST", base+"/SearchParameter", sp)
	if code != http.StatusCreated {
		t.Fatalf("POST SearchParameter: %d %v", code, created)
	}
	id, _ := created["id"].(string)

	state := ""
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		code, st := fhirCall(t, "GET", base+"/SearchParameter/"+id+"/$reindex-status", "")
		if code != http.StatusOK {
			t.Fatalf("$reindex-status: %d %v", code, st)
		}
		params, _ := st["parameter"].([]any)
		if len(params) > 0 {
			state, _ = params[0].(map[string]any)["valueCode"].(string)
		}
		if state == "active" || state == "failed" {
			break
		}
	}
	if state != "active" {
		t.Fatalf("reindex state %q, want active; logs:\n%s", state, srv.logs)
	}
	// Reindexing is in place: the existing Observations keep version 1
	// and a one-entry history.
	for _, obs := range []string{"sit1", "stand1", "sit2"} {
		code, res := fhirCall(t, "GET", base+"/Observation/"+obs, "")
		meta, _ := res["meta"].(map[string]any)
		if code != http.StatusOK || meta["versionId"] != "1" {
			t.Errorf("Observation/%s after reindex: %d meta %v, want versionId 1", obs, code, meta)
		}
		code, hist := fhirCall(t, "GET", base+"/Observation/"+obs+"/_history", "")
		if entries, _ := hist["entry"].([]any); code != http.StatusOK || len(entries) != 1 {
			t.Errorf("Observation/%s/_history after reindex: %d with %d entries, want 1", obs, code, len(entries))
		}
	}
	if code, out := fhirCall(t, "PUT", base+"/Observation/stand2", positionObservation("stand2", "standing")); code != http.StatusCreated {
		t.Fatalf("PUT Observation/stand2: %d %v", code, out)
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"body-position=sitting", []string{"sit1", "sit2"}},
		{"body-position=standing", []string{"stand1", "stand2"}},
		{"body-position=lying", nil},
	}
	for _, tc := range tests {
		code, bundle := fhirCall(t, "GET", base+"/Observation?"+tc.query+"&_sort=_id", "")
		if code != http.StatusOK {
			t.Fatalf("search %s: %d %v", tc.query, code, bundle)
		}
		var got []string
		entries, _ := bundle["entry"].([]any)
		for _, e := range entries {
			res, _ := e.(map[string]any)["resource"].(map[string]any)
			got = append(got, res["id"].(string))
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("search %s = %v, want %v", tc.query, got, tc.want)
		}
	}
	srv.stop() // the loop must stop with the server (serve returns nil)
}

// TestServeLogsCapabilities checks that start-up tells operators what the
// database cannot do. Both backends commit several writes atomically
// (MongoDB without transactions through commit records), so transaction
// Bundles work and are not announced as refused; FerretDB's degraded paths
// are logged as notes.
func TestServeLogsCapabilities(t *testing.T) {
	tests := []struct {
		name      string
		args      func(t *testing.T) []string
		wantNotes bool
		topology  string // what /readyz and the log report (a real MongoDB: any)
	}{
		{"sqlite", func(t *testing.T) []string { return []string{"--data-dir", t.TempDir()} }, false, "embedded"},
		{"ferretdb", func(t *testing.T) []string {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			srv, err := mongotest.Start(ctx, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := srv.Stop(); err != nil {
					t.Error(err)
				}
			})
			return []string{"--data-dir", t.TempDir(), "--mongodb-uri", srv.URI, "--mongodb-database", mongotest.Database(t)}
		}, os.Getenv(mongotest.EnvURI) == "", map[bool]string{true: "standalone"}[os.Getenv(mongotest.EnvURI) == ""]}, // a real MongoDB may have no degraded path
	}
	tx := `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","id":"tx1"},"request":{"method":"PUT","url":"Patient/tx1"}}]}`
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServe(t, append([]string{"--auth=off"}, tc.args(t)...)...)
			if code, out := fhirCall(t, "POST", srv.base+"/fhir", tx); code != http.StatusOK {
				t.Errorf("transaction Bundle: %d %v", code, out)
			}
			code, ready := fhirCall(t, "GET", srv.base+"/readyz", "")
			db, _ := ready["database"].(map[string]any)
			if code != http.StatusOK || db == nil || db["backend"] != tc.name && !(tc.name == "ferretdb" && db["backend"] == "mongodb") ||
				(tc.topology != "" && db["topology"] != tc.topology) || db["atomicCommit"] != true {
				t.Errorf("/readyz = %d %v; want the deployment (topology %q)", code, ready, tc.topology)
			}
			if tc.name == "ferretdb" && tc.topology == "standalone" && (db["transactions"] != false || !strings.Contains(fmt.Sprint(db["version"]), "MongoDB")) {
				t.Errorf("/readyz on FerretDB: %v; want no transactions and a version", db)
			}
			srv.stop()
			logs := srv.logs.String()
			if strings.Contains(logs, refusedNote) {
				t.Errorf("logs announce refused transactions on an atomic store:\n%s", logs)
			}
			if !strings.Contains(logs, `msg="database deployment" backend=`) || (tc.topology != "" && !strings.Contains(logs, "topology="+tc.topology)) {
				t.Errorf("no deployment line with topology %q in the logs:\n%s", tc.topology, logs)
			}
			if got := strings.Contains(logs, `msg="database capability"`); got != tc.wantNotes {
				t.Errorf("capability notes logged: %v, want %v; logs:\n%s", got, tc.wantNotes, logs)
			}
		})
	}
}

// undescribed is a real backend that does not report its capabilities
// (the embedded interface hides Capabilities), as a third-party backend
// might: the server must assume no atomic commit and say so.
type undescribed struct{ storage.Backend }

// TestLogCapabilitiesRefusal checks the start-up line for a store without
// an atomic multi-write commit, and that the server then refuses
// transaction Bundles as announced.
func TestLogCapabilitiesRefusal(t *testing.T) {
	ctx := context.Background()
	real, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer real.Close()
	tests := []struct {
		name        string
		backend     storage.Backend
		wantRefused bool
	}{
		{"sqlite", real, false},
		{"undescribed", undescribed{real}, true},
	}
	for _, tc := range tests {
		var logs bytes.Buffer
		logCapabilities(ctx, slog.New(slog.NewTextHandler(&logs, nil)), tc.backend)
		if got := strings.Contains(logs.String(), refusedNote); got != tc.wantRefused {
			t.Errorf("%s: logs mention refusal: %v, want %v; logs:\n%s", tc.name, got, tc.wantRefused, logs.String())
		}
		srv, err := fhir.New(fhir.Config{BaseURL: "http://fhir.test", Backend: tc.backend, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewServer(srv.Handler())
		code, out := fhirCall(t, "POST", ts.URL+"/fhir", `{"resourceType":"Bundle","type":"transaction","entry":[]}`)
		ts.Close()
		srv.Close()
		if refused := code != http.StatusOK; refused != tc.wantRefused {
			t.Errorf("%s: empty transaction Bundle: %d %v, want refused: %v", tc.name, code, out, tc.wantRefused)
		}
	}
}

const refusedNote = "transaction Bundles are refused"

// TestParseSearchParameterPoll checks the poll interval flag and its bounds.
func TestParseSearchParameterPoll(t *testing.T) {
	tests := []struct {
		args    []string
		env     map[string]string
		want    time.Duration
		wantErr bool
	}{
		{nil, nil, 5 * time.Second, false},
		{[]string{"--searchparameter-poll", "250ms"}, nil, 250 * time.Millisecond, false},
		{nil, map[string]string{"ANODYNE_SEARCHPARAMETER_POLL": "1m"}, time.Minute, false},
		{[]string{"--searchparameter-poll", "0s"}, nil, 0, true},
		{[]string{"--searchparameter-poll", "soon"}, nil, 0, true},
	}
	for _, tc := range tests {
		cfg, err := parseServe(tc.args, io.Discard, func(k string) string { return tc.env[k] })
		if (err != nil) != tc.wantErr {
			t.Errorf("%v %v: err %v, wantErr %v", tc.args, tc.env, err, tc.wantErr)
			continue
		}
		if err == nil && cfg.SPPoll != tc.want {
			t.Errorf("%v %v: poll %v, want %v", tc.args, tc.env, cfg.SPPoll, tc.want)
		}
	}
}
