package fhir

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/lease"
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

// exportStores are the two places export files live, each with a way to
// see a file's bytes and a stamp that changes whenever it is rewritten.
func exportStores(t *testing.T) []struct {
	name  string
	files func(be storage.Backend) (exportFiles, Config)
} {
	dir := t.TempDir()
	return []struct {
		name  string
		files func(be storage.Backend) (exportFiles, Config)
	}{
		{"dir", func(be storage.Backend) (exportFiles, Config) {
			return dirFiles{dir: dir}, Config{ExportDir: dir}
		}},
		{"store", func(be storage.Backend) (exportFiles, Config) {
			return kvFiles{kv: be.KV(), chunk: exportChunkSize}, Config{ExportInStore: true}
		}},
	}
}

func readExportFile(t *testing.T, f exportFiles, id string, o exportOutput) string {
	t.Helper()
	rc, err := f.open(t.Context(), id, o)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	raw, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// TestExportResumesFromCheckpoint: a process took a job's lease, finished
// its first query group, half wrote the second and died. The next process
// leaves the job alone while the dead one's lease lasts, then takes it
// over and completes it from its checkpoint: the finished file is kept as
// it was, the half-written one is rewritten, every resource is exported
// once.
func TestExportResumesFromCheckpoint(t *testing.T) {
	for _, store := range exportStores(t) {
		t.Run(store.name, func(t *testing.T) {
			ctx := context.Background()
			be, err := sqlite.Open(ctx, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer be.Close()
			files, cfg := store.files(be)
			cfg.BaseURL, cfg.Backend, cfg.ExportWorkers = "http://anodyne.test", be, -1
			cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			cfg.ExportLeaseTTL = 500 * time.Millisecond
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
			if err := s1.bulk.create(ctx, job); err != nil {
				t.Fatal(err)
			}
			// The dying process: it holds the lease (for 1.5s, never renewed).
			const deadTTL = 1500 * time.Millisecond
			if ok, err := lease.Acquire(ctx, be.KV(), bulkLeasePrefix+job.ID, "dead-process", deadTTL); err != nil || !ok {
				t.Fatalf("Acquire: %v %v", ok, err)
			}
			leased := time.Now()
			_, raw, err := s1.bulk.load(ctx, job.ID)
			if err != nil {
				t.Fatal(err)
			}
			st := &runState{exportJob: job, prev: raw}
			outs, err := s1.bulk.runGroup(ctx, st, job.Groups[0])
			if err != nil {
				t.Fatal(err)
			}
			st.Output, st.Next, st.Status = outs, 1, jobRunning
			if err := s1.bulk.save(ctx, st); err != nil {
				t.Fatal(err)
			}
			half, err := files.create(ctx, job.ID, "Observation.ndjson")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := half.Write([]byte(`{"resourceType":"Observation","id":"o1"`)); err != nil {
				t.Fatal(err)
			}
			if _, err := half.commit(); err != nil {
				t.Fatal(err)
			}
			firstBefore := readExportFile(t, files, job.ID, outs[0])
			s1.Close()

			cfg.ExportWorkers = 0
			s2, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			deadline := time.Now().Add(30 * time.Second)
			for {
				job, _, err = s2.bulk.load(ctx, job.ID)
				if err != nil {
					t.Fatal(err)
				}
				if job.Status == jobDone || job.Status == jobFailed || time.Now().After(deadline) {
					break
				}
				if time.Since(leased) < deadTTL-200*time.Millisecond && job.Next != 1 {
					t.Fatalf("job moved to group %d while the dead process's lease lasted", job.Next)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if took := time.Since(leased); took < deadTTL {
				t.Fatalf("job finished %s after the dead process leased it, before its lease (%s) expired", took, deadTTL)
			}
			if job.Status != jobDone || job.Exported != 4 {
				t.Fatalf("job %s, exported %d, failure %q", job.Status, job.Exported, job.Failure)
			}
			got := map[string]int64{}
			var obs exportOutput
			for _, o := range job.Output {
				got[o.Type] = o.Count
				if o.Type == "Observation" {
					obs = o
				}
			}
			if got["Patient"] != 2 || got["Observation"] != 2 {
				t.Errorf("outputs %v", got)
			}
			if after := readExportFile(t, files, job.ID, job.Output[0]); after != firstBefore || strings.Count(after, "\n") != 2 {
				t.Errorf("the finished file changed: %q, was %q", after, firstBefore)
			}
			redone := readExportFile(t, files, job.ID, obs)
			if strings.Count(redone, "\n") != 2 || !strings.Contains(redone, `"id":"o2"`) || strings.Contains(redone, `"id":"o3"`) {
				t.Errorf("half-written file not redone: %q", redone)
			}
			if _, err := lease.Holder(ctx, be.KV(), bulkLeasePrefix+job.ID); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("the finished job's lease is still held: %v", err)
			}
		})
	}
}

// TestExportRetention: finished jobs the client never deleted are removed,
// record and files, once the manifest's Expires has passed.
func TestExportRetention(t *testing.T) {
	for _, store := range exportStores(t) {
		t.Run(store.name, func(t *testing.T) {
			ctx := context.Background()
			be, err := sqlite.Open(ctx, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer be.Close()
			files, cfg := store.files(be)
			cfg.BaseURL, cfg.Backend, cfg.ExportWorkers = "http://anodyne.test", be, -1
			cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			outs := map[string]exportOutput{}
			for _, tc := range []struct {
				id       string
				finished time.Duration
			}{{"old", 25 * time.Hour}, {"fresh", time.Hour}} {
				w, err := files.create(ctx, tc.id, "Patient.ndjson")
				if err != nil {
					t.Fatal(err)
				}
				if _, err := w.Write([]byte("{}\n")); err != nil {
					t.Fatal(err)
				}
				size, err := w.commit()
				if err != nil {
					t.Fatal(err)
				}
				o := exportOutput{Type: "Patient", File: "Patient.ndjson", Count: 1, Size: size}
				outs[tc.id] = o
				job := exportJob{ID: tc.id, Status: jobDone, Finished: time.Now().Add(-tc.finished), Output: []exportOutput{o}}
				if err := s.bulk.create(ctx, job); err != nil {
					t.Fatal(err)
				}
			}
			if ids, err := s.bulk.pending(ctx); err != nil || len(ids) != 0 {
				t.Fatalf("pending: %v %v", ids, err)
			}
			for id, kept := range map[string]bool{"old": false, "fresh": true} {
				_, _, err := s.bulk.load(ctx, id)
				if (err == nil) != kept {
					t.Errorf("%s: record err %v, want kept=%v", id, err, kept)
				}
				rc, err := files.open(ctx, id, outs[id])
				var content []byte
				if err == nil {
					content, err = io.ReadAll(rc)
					rc.Close()
				}
				if (err == nil && string(content) == "{}\n") != kept {
					t.Errorf("%s: file %q, %v, want kept=%v", id, content, err, kept)
				}
			}
		})
	}
}

// TestKVFilesChunks writes a file in chunks smaller than its lines and
// reads it back whole, by ranges and after an overwrite that leaves more
// chunks behind than the new file has.
func TestKVFilesChunks(t *testing.T) {
	ctx := t.Context()
	be, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	f := kvFiles{kv: be.KV(), chunk: 7}
	write := func(parts ...string) exportOutput {
		w, err := f.create(ctx, "j", "Patient.ndjson")
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range parts {
			if _, err := w.Write([]byte(p)); err != nil {
				t.Fatal(err)
			}
		}
		size, err := w.commit()
		if err != nil {
			t.Fatal(err)
		}
		return exportOutput{File: "Patient.ndjson", Size: size}
	}
	long := strings.Repeat("0123456789", 5) + "tail"
	o := write(long[:3], long[3:20], long[20:])
	if o.Size != int64(len(long)) {
		t.Fatalf("size %d, want %d", o.Size, len(long))
	}
	if got := readExportFile(t, f, "j", o); got != long {
		t.Fatalf("read %q, want %q", got, long)
	}
	rc, err := f.open(ctx, "j", o)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int{{0, 1}, {6, 8}, {7, 14}, {13, 30}, {50, 54}} {
		if _, err := rc.Seek(int64(r[0]), io.SeekStart); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, r[1]-r[0])
		if _, err := io.ReadFull(rc, buf); err != nil || string(buf) != long[r[0]:r[1]] {
			t.Errorf("bytes %d-%d = %q, %v; want %q", r[0], r[1], buf, err, long[r[0]:r[1]])
		}
	}
	if end, err := rc.Seek(0, io.SeekEnd); err != nil || end != int64(len(long)) {
		t.Errorf("Seek end = %d, %v", end, err)
	}
	short := write("abc\n")
	if got := readExportFile(t, f, "j", short); got != "abc\n" {
		t.Fatalf("rewritten file reads %q", got)
	}
	if err := f.remove(ctx, "j"); err != nil {
		t.Fatal(err)
	}
	if keys, err := be.KV().List(ctx, bulkFilePrefix); err != nil || len(keys) != 0 {
		t.Fatalf("records after remove: %v %v", keys, err)
	}
}
