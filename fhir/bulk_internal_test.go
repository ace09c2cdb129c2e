package fhir

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

func TestSplitTypeFilters(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"Observation?code=a", []string{"Observation?code=a"}},
		{"Observation?code=a,b", []string{"Observation?code=a,b"}},
		{"Observation?code=a,b,Condition?clinical-status=active", []string{"Observation?code=a,b", "Condition?clinical-status=active"}},
		{"Observation?code=a,NotAType?x=1", []string{"Observation?code=a,NotAType?x=1"}},
	}
	for _, tc := range cases {
		if got := splitTypeFilters(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitTypeFilters(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFlattenBundle(t *testing.T) {
	bundle := `{"resourceType":"Bundle","type":"transaction","entry":[
	 {"fullUrl":"urn:uuid:11111111-2222-3333-4444-555555555555","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},
	 {"fullUrl":"urn:uuid:aaaaaaaa-2222-3333-4444-555555555555","resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},
	   "subject":{"reference":"urn:uuid:11111111-2222-3333-4444-555555555555"},"hasMember":[{"reference":"urn:uuid:unknown"}]},"request":{"method":"POST","url":"Observation"}},
	 {"fullUrl":"http://other/fhir/Encounter/e1","resource":{"resourceType":"Encounter","id":"given","subject":{"reference":"urn:uuid:11111111-2222-3333-4444-555555555555"}},"request":{"method":"PUT","url":"Encounter/e9"}}]}`
	out, err := FlattenBundle([]byte(bundle))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`"id":"11111111-2222-3333-4444-555555555555"`,
		`"subject":{"reference":"Patient/11111111-2222-3333-4444-555555555555"}`,
		`"id":"e9"`,
	}
	for i, w := range want {
		if !strings.Contains(string(out[i]), w) {
			t.Errorf("entry %d: %s lacks %s", i, out[i], w)
		}
	}
	if !strings.Contains(string(out[1]), `"urn:uuid:unknown"`) {
		t.Errorf("a reference to no entry must be left alone: %s", out[1])
	}
	for _, bad := range []string{`{"resourceType":"Patient"}`, `{"resourceType":"Bundle","entry":[{"request":{"method":"DELETE","url":"Patient/1"}}]}`, `[1]`, `{`} {
		if _, err := FlattenBundle([]byte(bad)); err == nil {
			t.Errorf("FlattenBundle(%s) succeeded", bad)
		}
	}
}

// TestExportResumesFromCheckpoint: a job whose first query group finished
// before the process stopped, and whose second was half written, is
// completed by the next process from its checkpoint: the finished file is
// kept as it was, the half-written one is rewritten.
func TestExportResumesFromCheckpoint(t *testing.T) {
	ctx := context.Background()
	be, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	dir := t.TempDir()
	cfg := Config{BaseURL: "http://anodyne.test", Backend: be, ExportDir: dir, ExportWorkers: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, body := range []string{
		`{"resourceType":"Patient","id":"p1"}`, `{"resourceType":"Patient","id":"p2"}`,
		`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"}}`,
		`{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"x"}}`,
		`{"resourceType":"Observation","id":"o3","status":"preliminary","code":{"text":"x"}}`,
	} {
		parsed, issues := s1.validator.Validate(ctx, []byte(body))
		if conformance.HasErrors(issues) {
			t.Fatalf("resource %d: %v", i, issues)
		}
		w, err := s1.prepare(parsed.Type, parsed.ID, parsed.Resource, 0, now(), http.MethodPut)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s1.commitOne(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	q := url.Values{"_type": {"Patient,Observation"}, "_typeFilter": {"Observation?status=final"}}
	job, err := s1.planExport(ctx, "system", nil, q, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(job.Groups) != 2 {
		t.Fatalf("groups %+v, want one per distinct filter", job.Groups)
	}
	jobDir := s1.bulk.jobDir(job.ID)
	if err := os.MkdirAll(jobDir, 0o750); err != nil {
		t.Fatal(err)
	}
	outs, err := s1.bulk.runGroup(ctx, &job, jobDir, job.Groups[0])
	if err != nil {
		t.Fatal(err)
	}
	job.Output, job.Next, job.Status = outs, 1, jobRunning
	if err := s1.bulk.save(ctx, job); err != nil {
		t.Fatal(err)
	}
	half := filepath.Join(jobDir, "Observation.ndjson")
	if err := os.WriteFile(half, []byte(`{"resourceType":"Observation","id":"o1"`), 0o600); err != nil {
		t.Fatal(err)
	}
	first := filepath.Join(jobDir, outs[0].File)
	before, err := os.Stat(first)
	if err != nil {
		t.Fatal(err)
	}
	s1.Close()

	cfg.ExportWorkers = 0
	s2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		job, err = s2.bulk.load(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if job.Status == jobDone || job.Status == jobFailed || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if job.Status != jobDone || job.Exported != 4 {
		t.Fatalf("job %s, exported %d, failure %q", job.Status, job.Exported, job.Failure)
	}
	got := map[string]int64{}
	for _, o := range job.Output {
		got[o.Type] = o.Count
	}
	if got["Patient"] != 2 || got["Observation"] != 2 {
		t.Errorf("outputs %v", got)
	}
	after, err := os.Stat(first)
	if err != nil || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("the finished file was rewritten (%v)", err)
	}
	raw, err := os.ReadFile(half)
	if err != nil || strings.Count(string(raw), "\n") != 2 || !strings.Contains(string(raw), `"id":"o2"`) {
		t.Errorf("half-written file not redone: %q (%v)", raw, err)
	}
}

// TestExportRetention: finished jobs the client never deleted are removed,
// record and files, once the manifest's Expires has passed.
func TestExportRetention(t *testing.T) {
	ctx := context.Background()
	be, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	dir := t.TempDir()
	s, err := New(Config{BaseURL: "http://anodyne.test", Backend: be, ExportDir: dir, ExportWorkers: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tc := range []struct {
		id       string
		finished time.Duration
		kept     bool
	}{{"old", 25 * time.Hour, false}, {"fresh", time.Hour, true}} {
		job := exportJob{ID: tc.id, Status: jobDone, Finished: time.Now().Add(-tc.finished)}
		if err := s.bulk.save(ctx, job); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, tc.id), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, err := s.bulk.claim(ctx); err != nil || ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	for id, kept := range map[string]bool{"old": false, "fresh": true} {
		_, err := s.bulk.load(ctx, id)
		_, serr := os.Stat(filepath.Join(dir, id))
		if (err == nil) != kept || (serr == nil) != kept {
			t.Errorf("%s: record err %v, files err %v, want kept=%v", id, err, serr, kept)
		}
	}
}
