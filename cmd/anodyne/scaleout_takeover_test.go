package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage/mongo"
)

// holderPid reads who holds a lease, from the store: the owner is
// "host/pid/random" (lease.NewOwner). 0 while nobody holds it.
func holderPid(t *testing.T, b *mongo.Backend, key string) int {
	t.Helper()
	raw, err := b.KV().Get(context.Background(), key)
	if err != nil {
		return 0
	}
	parts := strings.Split(string(raw), "/")
	if len(parts) != 3 {
		t.Fatalf("lease %s has owner %q, not host/pid/random", key, raw)
	}
	pid, err := strconv.Atoi(parts[1])
	if err != nil {
		t.Fatalf("lease %s has owner %q: %v", key, raw, err)
	}
	return pid
}

// killHolder waits (while done reports false) for the lease key to be
// held by one of procs and kills that process with SIGKILL; it returns
// the killed process, or nil when the work was over before.
func killHolder(t *testing.T, b *mongo.Backend, key string, procs []*exec.Cmd, done func() bool) *exec.Cmd {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if pid := holderPid(t, b, key); pid != 0 {
			for _, p := range procs {
				if p.Process.Pid == pid {
					if err := p.Process.Signal(syscall.SIGKILL); err != nil {
						t.Fatal(err)
					}
					p.Wait()
					return p
				}
			}
			t.Fatalf("lease %s held by pid %d, none of the servers", key, pid)
		}
		if done() {
			return nil
		}
	}
	t.Fatalf("nobody took lease %s", key)
	return nil
}

// TestScaleOutTakeover runs "anodyne serve" processes on one FerretDB
// database and kills, with SIGKILL, the one holding the lease of a
// running export, then of a running SearchParameter reindex: another
// process takes the work over once the lease expires and finishes it from
// the checkpoint; the export's files, served by a process that ran no
// export, hold every resource exactly once, and the new search parameter
// finds every resource it should, on every process that reindexed.
func TestScaleOutTakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts FerretDB and four server processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	uri, db := ownFerretDB(ctx, t)
	store, err := mongo.Open(ctx, uri, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })

	worker := []string{"--export-workers", "1", "--lease-ttl", "5s", "--searchparameter-poll", "100ms", "--log-level=info"}
	// a serves the API only: no export worker, and it looks for new
	// SearchParameters too rarely to reindex during the test.
	a := serveMongoChild(t, uri, db, "--export-workers", "0", "--searchparameter-poll", "1h")
	pb, b := serveMongoProc(t, uri, db, worker...)
	pc, c := serveMongoProc(t, uri, db, worker...)
	roots := map[*exec.Cmd]string{pb: b, pc: c}

	want := map[string]int{"Patient": 10, "Observation": 30, "Condition": 10, "Encounter": 10, "Procedure": 10}
	var nd bytes.Buffer
	for typ, n := range want {
		for i := range n {
			switch typ {
			case "Patient":
				fmt.Fprintf(&nd, `{"resourceType":"Patient","id":"p%d","name":[{"family":"Take"}]}`+"\n", i)
			case "Observation":
				fmt.Fprintf(&nd, `{"resourceType":"Observation","id":"o%d","status":"final","code":{"text":"pain"},"subject":{"reference":"Patient/p%d"},"note":[{"text":"takeover-%d"}]}`+"\n", i, i%10, i%3)
			case "Condition":
				fmt.Fprintf(&nd, `{"resourceType":"Condition","id":"c%d","subject":{"reference":"Patient/p%d"}}`+"\n", i, i%10)
			case "Encounter":
				fmt.Fprintf(&nd, `{"resourceType":"Encounter","id":"e%d","status":"finished","class":{"code":"AMB"},"subject":{"reference":"Patient/p%d"}}`+"\n", i, i%10)
			case "Procedure":
				fmt.Fprintf(&nd, `{"resourceType":"Procedure","id":"x%d","status":"completed","subject":{"reference":"Patient/p%d"}}`+"\n", i, i%10)
			}
		}
	}
	// One batch of PUTs ($import is slow on FerretDB, whose every find is
	// a full scan).
	var entries []string
	for _, line := range strings.Split(strings.TrimSpace(nd.String()), "\n") {
		var r struct{ ResourceType, ID string }
		json.Unmarshal([]byte(line), &r)
		entries = append(entries, `{"resource":`+line+`,"request":{"method":"PUT","url":"`+r.ResourceType+"/"+r.ID+`"}}`)
	}
	code, _, raw := httpCall(t, "POST", a+"/fhir", `{"resourceType":"Bundle","type":"batch","entry":[`+strings.Join(entries, ",")+`]}`)
	if code != http.StatusOK || strings.Count(string(raw), `"201 Created"`) != len(entries) {
		t.Fatalf("loading: %d %.500s", code, raw)
	}
	var survivor *exec.Cmd

	t.Run("export", func(t *testing.T) {
		code, hdr, raw := httpCall(t, "GET", a+"/fhir/$export?_type=Patient,Observation,Condition,Encounter,Procedure", "", "Prefer: respond-async")
		if code != http.StatusAccepted {
			t.Fatalf("kick-off on a: %d %s", code, raw)
		}
		status := a + strings.TrimPrefix(hdr.Get("Content-Location"), a)
		job := status[strings.LastIndex(status, "/")+1:]
		finished := func() bool { code, _, _ := httpCall(t, "GET", status, ""); return code == http.StatusOK }
		killed := killHolder(t, store, "bulk/export/lease/"+job, []*exec.Cmd{pb, pc}, finished)
		if killed == nil {
			t.Fatal("the export finished before its holder could be killed: make it larger")
		}
		survivor = pb
		if killed == pb {
			survivor = pc
		}
		var m struct {
			Output []struct {
				Type  string `json:"type"`
				URL   string `json:"url"`
				Count int    `json:"count"`
			} `json:"output"`
		}
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			code, hdr, raw = httpCall(t, "GET", status, "")
			if code == http.StatusOK {
				if err := json.Unmarshal(raw, &m); err != nil {
					t.Fatal(err)
				}
				break
			}
			if code != http.StatusAccepted || time.Now().After(deadline) {
				logs, _ := serveLogs.Load(survivor)
				t.Fatalf("status on a after the kill: %d %s %v; the survivor logged:\n%v", code, raw, hdr.Get("X-Progress"), logs)
			}
		}
		// The lease goes right after the job's last checkpoint.
		for deadline := time.Now().Add(10 * time.Second); holderPid(t, store, "bulk/export/lease/"+job) != 0; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("the finished job's lease is still held by %d", holderPid(t, store, "bulk/export/lease/"+job))
				break
			}
		}
		got := map[string]int{}
		for _, o := range m.Output {
			if got[o.Type] != 0 {
				t.Errorf("the manifest lists %s twice", o.Type)
			}
			_, _, body := httpCall(t, "GET", a+strings.TrimPrefix(o.URL, a), "", "Accept: application/fhir+ndjson")
			ids := map[string]bool{}
			for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
				var r struct{ ResourceType, ID string }
				if err := json.Unmarshal([]byte(line), &r); err != nil || r.ResourceType != o.Type {
					t.Fatalf("%s file line %q: %v", o.Type, line, err)
				}
				if ids[r.ID] {
					t.Errorf("%s/%s exported twice", o.Type, r.ID)
				}
				ids[r.ID] = true
			}
			if len(ids) != o.Count {
				t.Errorf("%s: the manifest says %d, the file holds %d", o.Type, o.Count, len(ids))
			}
			got[o.Type] = len(ids)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("exported %v, stored %v", got, want)
		}
	})
	if survivor == nil {
		t.FailNow()
	}

	t.Run("reindex", func(t *testing.T) {
		// A fresh process beside the survivor: two candidates again.
		pd, d := serveMongoProc(t, uri, db, worker...)
		roots[pd] = d
		sp := `{"resourceType":"SearchParameter","url":"http://example.org/fhir/SearchParameter/observation-note","name":"NoteText",
			"status":"active","description":"Text of an Observation's notes","code":"note-text","base":["Observation"],"type":"string",
			"expression":"Observation.note.text"}`
		code, _, raw := httpCall(t, "POST", a+"/fhir/SearchParameter", sp)
		if code != http.StatusCreated {
			t.Fatalf("POST SearchParameter: %d %s", code, raw)
		}
		var created struct{ ID string }
		json.Unmarshal(raw, &created)
		state := func(root string) string {
			_, _, raw := httpCall(t, "GET", root+"/fhir/SearchParameter/"+created.ID+"/$reindex-status", "")
			var st struct {
				Parameter []struct {
					Name      string `json:"name"`
					ValueCode string `json:"valueCode"`
				} `json:"parameter"`
			}
			json.Unmarshal(raw, &st)
			for _, p := range st.Parameter {
				if p.Name == "state" {
					return p.ValueCode
				}
			}
			return ""
		}
		over := func() bool { s := state(a); return s == "active" || s == "failed" }
		killed := killHolder(t, store, "searchparameter/lease/"+created.ID+"/1", []*exec.Cmd{survivor, pd}, over)
		if killed == nil {
			t.Fatal("the reindex finished before its holder could be killed: make it larger")
		}
		last := survivor
		if killed == survivor {
			last = pd
		}
		killedAt := time.Now()
		// FerretDB makes a reindex slow (every find a full scan): minutes
		// on a loaded machine.
		for deadline := time.Now().Add(180 * time.Second); !over(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				_, _, raw := httpCall(t, "GET", a+"/fhir/SearchParameter/"+created.ID+"/$reindex-status", "")
				logs, _ := serveLogs.Load(last)
				t.Fatalf("reindex not over three minutes after the kill: %s; lease held by pid %d (left: %d); it logged:\n%v", raw, holderPid(t, store, "searchparameter/lease/"+created.ID+"/1"), last.Process.Pid, logs)
			}
		}
		t.Logf("reindex over %s after the kill", time.Since(killedAt).Round(time.Millisecond))
		if s := state(a); s != "active" {
			t.Fatalf("reindex ended %q", s)
		}
		// Counted independently: o<i> has note takeover-<i%3>.
		for k := range 3 {
			n := 0
			for i := range want["Observation"] {
				if i%3 == k {
					n++
				}
			}
			_, _, raw := httpCall(t, "GET", fmt.Sprintf("%s/fhir/Observation?note-text=takeover-%d&_summary=count", roots[last], k), "")
			var bundle struct{ Total int }
			if err := json.Unmarshal(raw, &bundle); err != nil || bundle.Total != n {
				t.Errorf("note-text=takeover-%d on the process that finished: %d (%s), want %d", k, bundle.Total, raw, n)
			}
		}
	})
}
