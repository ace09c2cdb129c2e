package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// inputCounts counts, independently of the importer, the resources an
// import of dir must store: every entry of every Bundle file (none of the
// test Bundles makes a conditional create) and every NDJSON line, per type.
func inputCounts(t *testing.T, dir string) map[string]int {
	t.Helper()
	out := map[string]int{}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".ndjson") {
			for _, line := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
				var r struct{ ResourceType string }
				if err := json.Unmarshal(line, &r); err != nil {
					t.Fatal(err)
				}
				out[r.ResourceType]++
			}
			continue
		}
		var b struct {
			Entry []struct {
				Resource struct{ ResourceType string }
				Request  struct{ IfNoneExist string }
			}
		}
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatal(err)
		}
		for _, e := range b.Entry {
			if e.Request.IfNoneExist != "" {
				t.Fatalf("%s: a conditional create; the count would need its criteria", f)
			}
			out[e.Resource.ResourceType]++
		}
	}
	return out
}

// serverCounts reads, over the API, how many resources of each type the
// server holds and how many versions their type history lists.
func serverCounts(t *testing.T, base, token string, types []string) (counts, versions map[string]int) {
	t.Helper()
	counts, versions = map[string]int{}, map[string]int{}
	auth := map[string]string{"Accept": "application/fhir+json"}
	for _, typ := range types {
		res, m := call(t, http.MethodGet, base+"/"+typ+"?_summary=count", token, auth, nil)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("count of %s: %d", typ, res.StatusCode)
		}
		n, _ := m["total"].(float64)
		counts[typ] = int(n)
		for next := base + "/" + typ + "/_history?_count=1000"; next != ""; {
			res, m := call(t, http.MethodGet, next, token, auth, nil)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("history of %s: %d", typ, res.StatusCode)
			}
			es, _ := m["entry"].([]any)
			versions[typ] += len(es)
			next = ""
			links, _ := m["link"].([]any)
			for _, l := range links {
				if lm, _ := l.(map[string]any); lm["relation"] == "next" {
					next, _ = lm["url"].(string)
				}
			}
		}
	}
	return counts, versions
}

// TestRemoteImportSurvivesKill9: "anodyne import --server" of Synthea
// transaction Bundles, a batch Bundle and an NDJSON file, against a real
// server with real tokens, is killed with SIGKILL at spread-out moments
// and run again. Each time the server must hold exactly what the input
// holds (counted from the files, not from the importer), every resource at
// one version (nothing stored twice, not even as an update), and the
// resumed run's report must add up to the whole input. Requests carry an
// Idempotency-Key, so a request that got through before the kill is
// answered, not applied, the second time.
func TestRemoteImportSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server and about 50 processes")
	}
	src := t.TempDir()
	writeKillInput(t, src)
	var batch []string
	for i := range 40 {
		batch = append(batch, fmt.Sprintf(`{"resource":{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"72514-3"}]},"effectiveDateTime":"2026-10-%02dT08:00:00Z","valueInteger":%d},"request":{"method":"POST","url":"Observation"}}`, i%28+1, i%11))
	}
	os.WriteFile(filepath.Join(src, "10-batch.json"), []byte(`{"resourceType":"Bundle","type":"batch","entry":[`+strings.Join(batch, ",")+`]}`), 0o600)
	want := inputCounts(t, src)
	total := 0
	types := make([]string, 0, len(want))
	for typ, n := range want {
		total += n
		types = append(types, typ)
	}
	slices.Sort(types)

	// one server, one store per run: a fresh data directory each time
	type target struct{ base, token string }
	fresh := func() target {
		dir := t.TempDir()
		key := filepath.Join(dir, "etl.jwk")
		cli(t, "clients", "add", "--data-dir", dir, "--id", "etl", "--generate-key", key, "--scope", "system/*.cruds")
		srv := startServe(t, "--data-dir", dir, "--audit=off")
		base := srv.base + "/fhir"
		tok := strings.TrimSpace(cli(t, "token", "--client", "etl", "--key", key, "--scope", "system/*.cruds", "--server", base))
		return target{base, tok}
	}
	importArgs := func(tg target, in, state string) []string {
		return []string{"import", "--server", tg.base, "--token", tg.token, "--state", state, "--batch", "25", "--quiet", in}
	}
	check := func(what string, tg target) {
		t.Helper()
		counts, versions := serverCounts(t, tg.base, tg.token, types)
		for _, typ := range types {
			if counts[typ] != want[typ] {
				t.Errorf("%s: %d %s on the server, the input has %d", what, counts[typ], typ, want[typ])
			}
			if versions[typ] != counts[typ] {
				t.Errorf("%s: %s history lists %d versions for %d resources: something was stored twice", what, typ, versions[typ], counts[typ])
			}
		}
	}

	// A clean run in a child process: the reference, and the time a whole
	// import takes here, within which kill points are drawn.
	var span time.Duration
	{
		tg := fresh()
		in := copyDir(t, src)
		start := time.Now()
		out, err := runChild(importArgs(tg, in, filepath.Join(t.TempDir(), "state.json")))
		if err != nil {
			t.Fatalf("clean import: %v\n%s", err, out)
		}
		span = time.Since(start)
		if stored, failed, _ := reportCounts(t, out); stored != total || failed != 0 {
			t.Fatalf("clean import stored %d, failed %d, of %d", stored, failed, total)
		}
		check("clean import", tg)
		if t.Failed() {
			t.FailNow()
		}
	}

	rng := rand.New(rand.NewPCG(16, 15))
	kills, partial := 0, 0
	lo, hi := time.Duration(0), span
	for attempt := 0; (kills < 20 || partial < 5) && kills < 30 && attempt < 60; attempt++ {
		tg := fresh()
		in := copyDir(t, src) // new paths: new file identities, new keys
		args := importArgs(tg, in, filepath.Join(t.TempDir(), "state.json"))
		if hi <= lo {
			lo, hi = 0, span
		}
		delay := lo + time.Duration(rng.Int64N(int64(hi-lo)))
		if !killChild(t, args, delay, nil) {
			hi = delay
			continue // it had finished: not a kill point
		}
		kills++
		before, _ := serverCounts(t, tg.base, tg.token, types)
		committed := 0
		for _, n := range before {
			committed += n
		}
		out, err := runChild(args)
		if err != nil {
			t.Fatalf("kill %d: resuming: %v\n%s", kills, err, out)
		}
		stored, failed, skipped := reportCounts(t, out)
		if stored+failed+skipped != total || failed != 0 {
			t.Errorf("kill %d: resumed report %d stored + %d failed + %d skipped, the input has %d", kills, stored, failed, skipped, total)
		}
		switch {
		case committed > 0 && committed < total:
			partial++
		case committed == 0:
			lo = max(lo, delay) // killed before anything was committed
		}
		check(fmt.Sprintf("kill %d (after %s, %d of %d committed)", kills, delay.Round(time.Millisecond), committed, total), tg)
		if t.Failed() {
			t.FailNow()
		}
	}
	if kills < 20 {
		t.Fatalf("only %d runs were killed before they finished", kills)
	}
	if partial < 5 {
		t.Errorf("only %d of %d kills landed part-way through the import", partial, kills)
	}
	t.Logf("%d kills, %d part-way", kills, partial)
}

// copyDir copies the files of src into a new temporary folder.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	files, _ := filepath.Glob(filepath.Join(src, "*"))
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(f)), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}
