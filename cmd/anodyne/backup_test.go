package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// pairBundle is a transaction creating two Patients that name each other:
// a consistent copy holds both or neither.
func pairBundle(i int) string {
	return fmt.Sprintf(`{"resourceType":"Bundle","type":"transaction","entry":[
{"resource":{"resourceType":"Patient","id":"a%[1]d","link":[{"other":{"reference":"Patient/b%[1]d"},"type":"seealso"}]},"request":{"method":"PUT","url":"Patient/a%[1]d"}},
{"resource":{"resourceType":"Patient","id":"b%[1]d","link":[{"other":{"reference":"Patient/a%[1]d"},"type":"seealso"}]},"request":{"method":"PUT","url":"Patient/b%[1]d"}}]}`, i)
}

// TestBackupRestore backs up a store while a server writes transactions
// into it, restores the copy into a new directory and serves it: every
// pair acknowledged before the backup began is there, no pair is half
// there, and nothing acknowledged after the backup ended is.
func TestBackupRestore(t *testing.T) {
	dir := t.TempDir()
	srv := startServe(t, "--auth=off", "--data-dir", dir)
	post := func(i int) error {
		res, err := http.Post(srv.base+"/fhir", "application/fhir+json", strings.NewReader(pairBundle(i)))
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("transaction %d: status %d", i, res.StatusCode)
		}
		return nil
	}
	const before = 150
	for i := range before {
		if err := post(i); err != nil {
			t.Fatal(err)
		}
	}
	// Writers go on during the backup.
	var (
		stop    atomic.Bool
		acked   atomic.Int64
		wg      sync.WaitGroup
		writeMu sync.Mutex
		errs    []error
	)
	acked.Store(before)
	next := atomic.Int64{}
	next.Store(before)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				i := int(next.Add(1) - 1)
				if err := post(i); err != nil {
					writeMu.Lock()
					errs = append(errs, err)
					writeMu.Unlock()
					return
				}
				acked.Add(1)
			}
		}()
	}
	backupDir := filepath.Join(t.TempDir(), "backup")
	out := runCmd(t, false, "backup", "--data-dir", dir, backupDir)
	if !strings.Contains(out, "checked") {
		t.Errorf("backup report: %q", out)
	}
	// What is issued from here on was surely not in the copy.
	after := int(next.Load())
	stop.Store(true)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("writes during the backup failed: %v", errs)
	}
	if err := post(after + 1000); err != nil {
		t.Fatal(err)
	}
	// A second backup into the same directory is refused, not merged.
	runCmd(t, true, "backup", "--data-dir", dir, backupDir)
	// A restore onto the running server's directory is refused.
	runCmd(t, true, "restore", "--data-dir", dir, backupDir)
	// A directory that holds no backup is refused.
	runCmd(t, true, "restore", "--data-dir", t.TempDir(), t.TempDir())
	srv.stop()

	restored := filepath.Join(t.TempDir(), "restored")
	runCmd(t, false, "restore", "--data-dir", restored, backupDir)
	// Restoring again over the restored store is refused.
	runCmd(t, true, "restore", "--data-dir", restored, backupDir)

	again := startServe(t, "--auth=off", "--data-dir", restored)
	ids := map[string]bool{}
	for u := again.base + "/fhir/Patient?_count=500&_elements=id"; u != ""; {
		code, page := fhirCall(t, "GET", u, "")
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %v", u, code, page)
		}
		entries, _ := page["entry"].([]any)
		for _, e := range entries {
			res, _ := e.(map[string]any)["resource"].(map[string]any)
			ids[fmt.Sprint(res["id"])] = true
		}
		u = ""
		links, _ := page["link"].([]any)
		for _, l := range links {
			if l := l.(map[string]any); l["relation"] == "next" {
				u = fmt.Sprint(l["url"])
			}
		}
	}
	has := func(id string) bool { return ids[id] }
	var inCopy int
	for i := 0; i < after+1001; i++ {
		a, b := has(fmt.Sprintf("a%d", i)), has(fmt.Sprintf("b%d", i))
		if a != b {
			t.Errorf("pair %d is half in the copy (a %v, b %v)", i, a, b)
		}
		if i < before && !a {
			t.Errorf("pair %d, acknowledged before the backup, is missing", i)
		}
		if i >= after && a {
			t.Errorf("pair %d, issued after the backup ended, is in the copy", i)
		}
		if a {
			inCopy++
		}
	}
	if len(ids) != 2*inCopy {
		t.Errorf("the copy holds %d Patients, want the %d of its pairs", len(ids), 2*inCopy)
	}
	t.Logf("%d pairs acknowledged, %d in the copy (%d before the backup)", acked.Load(), inCopy, before)
	// The restored store takes writes.
	if code, out := fhirCall(t, "PUT", again.base+"/fhir/Patient/new", `{"resourceType":"Patient","id":"new"}`); code != http.StatusCreated {
		t.Fatalf("PUT on the restored store: %d %v", code, out)
	}
}

// TestBackupMongoDB: backup and restore point MongoDB users at mongodump.
func TestBackupMongoDB(t *testing.T) {
	for _, cmd := range []string{"backup", "restore"} {
		var out, errOut strings.Builder
		err := run(t.Context(), []string{cmd, "--mongodb-uri", "mongodb://127.0.0.1:1", t.TempDir()}, &out, &errOut, func(string) string { return "" }, nil)
		if err == nil || !strings.Contains(err.Error(), "mongodump") {
			t.Errorf("anodyne %s --mongodb-uri: %v, want a pointer to mongodump", cmd, err)
		}
	}
}
