package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// storeSummary is what a store holds, as its direct export shows it.
type storeSummary struct {
	counts   map[string]int    // per resource type
	versions map[string]string // Type/id -> meta.versionId
	kept     map[string]string // resources with ids kept by the import (NDJSON) -> content without meta
	names    []string          // every Patient's family name, sorted
}

func summarize(t *testing.T, dataDir string) storeSummary {
	t.Helper()
	out := filepath.Join(t.TempDir(), "export")
	runCmd(t, false, "export", "--data-dir", dataDir, "--quiet", out)
	s := storeSummary{counts: map[string]int{}, versions: map[string]string{}, kept: map[string]string{}}
	files, _ := filepath.Glob(filepath.Join(out, "*.ndjson"))
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
			var res map[string]any
			if err := json.Unmarshal(line, &res); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			typ, id := res["resourceType"].(string), res["id"].(string)
			s.counts[typ]++
			meta, _ := res["meta"].(map[string]any)
			s.versions[typ+"/"+id], _ = meta["versionId"].(string)
			if strings.HasPrefix(id, "kill-") {
				delete(res, "meta")
				norm, _ := json.Marshal(res)
				s.kept[typ+"/"+id] = string(norm)
			}
			if typ == "Patient" {
				names, _ := res["name"].([]any)
				n0, _ := names[0].(map[string]any)
				fam, _ := n0["family"].(string)
				s.names = append(s.names, fam)
			}
		}
	}
	slices.Sort(s.names)
	return s
}

var reportRe = regexp.MustCompile(`imported (\d+) resources from \d+ files in .*; (\d+) failed; (\d+) skipped`)

// reportCounts parses the summary line: stored, failed, skipped.
func reportCounts(t *testing.T, out string) (int, int, int) {
	t.Helper()
	m := reportRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no import summary in %q", out)
	}
	a, _ := strconv.Atoi(m[1])
	b, _ := strconv.Atoi(m[2])
	c, _ := strconv.Atoi(m[3])
	return a, b, c
}

// TestImportSurvivesKill9: "anodyne import" of Synthea transaction
// Bundles and an NDJSON file runs as a real process and is killed with
// SIGKILL at spread-out moments; the same command run again completes the
// import. Each time the store must equal a clean import: the same count
// of every type, every resource at version 1 (nothing stored twice, not
// even as a second version), the NDJSON resources identical, the same
// patients, and the resumed run's report adding up to the whole input.
func TestImportSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts about 50 processes")
	}
	in := t.TempDir()
	writeKillInput(t, in)

	cleanDir := filepath.Join(t.TempDir(), "clean")
	cs, cf, _ := reportCounts(t, runCmd(t, false, "import", "--data-dir", cleanDir, "--batch", "10", "--quiet", in))
	// Kill points are drawn within the time a whole import takes in a
	// child process on this machine, from its lock file appearing to its
	// exit, so that most runs are cut part-way whatever the machine's speed.
	span := 200 * time.Millisecond
	{
		dir := filepath.Join(t.TempDir(), "timing")
		cmd := exec.Command(os.Args[0], "import", "--data-dir", dir, "--batch", "10", "--quiet", in)
		cmd.Env = append(os.Environ(), "ANODYNE_TEST_RUN_MAIN=1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var locked time.Time
		if waitForFile(filepath.Join(dir, lockFile)) {
			locked = time.Now()
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("timing import: %v", err)
		}
		if !locked.IsZero() {
			span = max(span, time.Since(locked))
		}
	}
	total := cs + cf
	clean := summarize(t, cleanDir)
	if clean.counts["Patient"] != 3 || len(clean.kept) != 300 {
		t.Fatalf("clean import: %v", clean.counts)
	}

	rng := rand.New(rand.NewPCG(15, 9))
	kills, partial := 0, 0
	// The window [lo, hi) of kill delays adapts to this machine's load: a
	// run that finished lowers hi, a kill before the first commit raises lo
	// (a loaded machine starts the child slowly), so that enough kills land
	// part-way through the import whatever the load.
	lo, hi := time.Duration(0), span
	for attempt := 0; (kills < 20 || partial < 5) && kills < 40 && attempt < 80; attempt++ {
		dir := filepath.Join(t.TempDir(), "store")
		args := []string{"import", "--data-dir", dir, "--batch", "10", "--quiet", in}
		if hi <= lo {
			lo, hi = 0, span
		}
		delay := lo + time.Duration(rng.Int64N(int64(hi-lo)))
		// The lock file appears once the store is open: the import is
		// about to start; kill somewhere in the next moments.
		if !killChild(t, args, delay, func() { waitForFile(filepath.Join(dir, lockFile)) }) {
			hi = delay
			continue // it had finished: not a kill point
		}
		kills++
		out, err := runChild(args)
		if err != nil {
			t.Fatalf("kill %d: resuming: %v\n%s", kills, err, out)
		}
		stored, failed, skipped := reportCounts(t, out)
		if stored+failed+skipped != total {
			t.Errorf("kill %d: resumed report %d stored + %d failed + %d skipped != %d in the input", kills, stored, failed, skipped, total)
		}
		switch {
		case stored > 0 && skipped > 0:
			partial++
		case skipped == 0:
			lo = max(lo, delay) // killed before anything was committed
		}
		got := summarize(t, dir)
		if fmt.Sprint(got.counts) != fmt.Sprint(clean.counts) || !slices.Equal(got.names, clean.names) {
			t.Errorf("kill %d: store holds %v patients %v, a clean import %v patients %v", kills, got.counts, got.names, clean.counts, clean.names)
		}
		for k, v := range got.versions {
			if v != "1" {
				t.Errorf("kill %d: %s is at version %s: stored twice", kills, k, v)
			}
		}
		for k, v := range clean.kept {
			if got.kept[k] != v {
				t.Errorf("kill %d: %s differs from a clean import:\n%s\n%s", kills, k, got.kept[k], v)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	if kills < 20 {
		t.Fatalf("only %d of 80 runs were killed before they finished", kills)
	}
	if partial < 5 {
		t.Errorf("only %d of %d kills landed part-way through the import", partial, kills)
	}
	t.Logf("%d kills, %d part-way", kills, partial)
}

// writeKillInput writes the input of the import kill tests into dir: three
// Synthea transaction Bundles and an NDJSON file of 300 pain scores.
func writeKillInput(t *testing.T, dir string) {
	t.Helper()
	for _, f := range []string{"Hershel_Marvin_71a7f9d4-45b7-481b-b571-7ee0caca6e2a.json", "Joaquin_Rodriguez_69ee9841-f4a6-427a-a2fd-f5a891682057.json", "Malcolm_Dach_281f4a03-57e9-4b22-a322-68890ff22172.json"} {
		raw, err := os.ReadFile(filepath.Join("../../testdata/synthea", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var nd bytes.Buffer
	for i := range 300 {
		fmt.Fprintf(&nd, `{"resourceType":"Observation","id":"kill-%d","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"72514-3"}]},"effectiveDateTime":"2026-11-%02dT08:00:00Z","valueInteger":%d}`+"\n", i, i%28+1, i%11)
	}
	if err := os.WriteFile(filepath.Join(dir, "00-pain.ndjson"), nd.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitForFile waits up to 30 s for path to exist and reports whether it does.
func waitForFile(path string) bool {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return true
		}
	}
	return false
}

// killChild runs the command args in a child process (the test binary as
// anodyne), waits for ready (nil: not at all) and then delay, and kills it
// with SIGKILL; it reports whether the kill ended it (false: it had
// finished before).
func killChild(t *testing.T, args []string, delay time.Duration, ready func()) bool {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "ANODYNE_TEST_RUN_MAIN=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if ready != nil {
		ready()
	}
	time.Sleep(delay)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}

// runChild runs the command args in a child process to its end and
// returns its combined output.
func runChild(args []string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "ANODYNE_TEST_RUN_MAIN=1")
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}
