package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/subscription"
)

// serveChild runs "anodyne serve" on dir as a child process and returns
// it with its FHIR base, read from its "anodyne listening" log line.
func serveChild(t *testing.T, dir string) (*exec.Cmd, string) {
	t.Helper()
	cmd, _, stderr := child(t, "serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--auth=off", "--audit=off", "--subscription-allow-loopback")
	addr := make(chan string, 1)
	re := regexp.MustCompile(`addr=(\S+)`)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if line := sc.Text(); strings.Contains(line, "anodyne listening") {
				if m := re.FindStringSubmatch(line); m != nil {
					addr <- m[1]
				}
			}
		}
	}()
	select {
	case a := <-addr:
		return cmd, "http://" + a + "/fhir"
	case <-time.After(90 * time.Second):
		t.Fatal("the server did not start")
	}
	return nil, ""
}

func kill9(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}

// TestSubscriptionSurvivesKill: notifications of acknowledged writes that
// could not be delivered (the receiver was down) are delivered after the
// server is killed with SIGKILL and restarted, each exactly once and with
// the event id it was first tried with; after a second kill, nothing the
// receiver acknowledged is sent again.
func TestSubscriptionSurvivesKill(t *testing.T) {
	var (
		mu        sync.Mutex
		down      = true
		attempted = map[string]string{} // event id -> path, tried while down
		got       []string              // paths acknowledged
		gotIDs    = map[string]int{}
	)
	const secret = "kill-test-secret-0123456789"
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id := r.Header.Get(subscription.HeaderEventID)
		if !subscription.Verify(secret, id, body, r.Header.Get(subscription.HeaderSignature)) {
			t.Errorf("bad signature on %s %s", r.Method, r.URL.Path)
		}
		mu.Lock()
		defer mu.Unlock()
		if down {
			attempted[id] = r.URL.Path
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		got = append(got, r.URL.Path)
		gotIDs[id]++
		w.WriteHeader(http.StatusOK)
	}))
	defer rcv.Close()

	dir := t.TempDir()
	cmd, base := serveChild(t, dir)
	post := func(path, body string) map[string]any {
		t.Helper()
		res, err := http.Post(base+path, "application/fhir+json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("POST %s: %d %s", path, res.StatusCode, raw)
		}
		var m map[string]any
		json.Unmarshal(raw, &m)
		return m
	}
	post("/Subscription", fmt.Sprintf(`{"resourceType":"Subscription","status":"requested","reason":"pain","criteria":"Observation?code=72514-3","channel":{"type":"rest-hook","endpoint":%q,"payload":"application/fhir+json","extension":[{"url":"http://anodyne-fhir.org/fhir/StructureDefinition/subscription-secret","valueString":%q}]}}`, rcv.URL+"/hook", secret))
	var want []string
	for i, code := range []string{"72514-3", "8867-4", "72514-3", "72514-3"} {
		o := post("/Observation", fmt.Sprintf(`{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":%q}]},"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":%d}}`, code, i))
		if code == "72514-3" {
			want = append(want, "/hook/Observation/"+o["id"].(string))
		}
	}
	// Let the server try (and fail) at least once, then kill it.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(attempted)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no delivery was attempted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	kill9(t, cmd)

	mu.Lock()
	down = false
	mu.Unlock()
	cmd, _ = serveChild(t, dir)
	deadline = time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= len(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after restart: %d of %d notifications", n, len(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // catch a duplicate
	kill9(t, cmd)
	cmd, _ = serveChild(t, dir)
	time.Sleep(2500 * time.Millisecond) // poll interval and more: nothing acknowledged comes again
	kill9(t, cmd)

	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("delivered\n%v\nwant each once, in commit order\n%v", got, want)
	}
	for id, n := range gotIDs {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
		if p, ok := attempted[id]; ok && !strings.HasPrefix(p, "/hook/") {
			t.Errorf("event %s changed its target", id)
		}
	}
	// The first event was tried before the kill; its id survived it.
	first := ""
	for id, p := range attempted {
		if p == want[0] {
			first = id
		}
	}
	if first == "" || gotIDs[first] != 1 {
		t.Errorf("the event tried before the kill (%q) was not delivered under the same id after it: %v", first, gotIDs)
	}
}

// TestSubscriptionWithSmartTokens runs the served configuration with
// authorization on and real signed backend-services tokens: a client
// whose scope is limited to one patient's Observations subscribes to pain
// scores and hears of that patient's only; a client with every scope
// hears of all; each Subscription's owner is the client whose token
// created it.
func TestSubscriptionWithSmartTokens(t *testing.T) {
	dir := t.TempDir()
	key, jwks := es384(t)
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	const narrowScope = "system/Observation.rs?subject=Patient/p1 system/Subscription.cruds"
	for id, scope := range map[string]string{"ehr": "system/*.cruds", "narrow": narrowScope} {
		cli(t, "clients", "add", "--data-dir", dir, "--id", id, "--type", "confidential-asymmetric", "--jwks-file", jwksFile, "--scope", scope)
	}
	var mu sync.Mutex
	got := map[string][]string{}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		who, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		got[who] = append(got[who], r.URL.Path)
	}))
	defer rcv.Close()
	srv := startServe(t, "--data-dir", dir, "--audit=off", "--subscription-allow-loopback")
	ehr := backendToken(t, srv.base, "ehr", key, "system/*.cruds")
	narrow := backendToken(t, srv.base, "narrow", key, narrowScope)
	subscribe := func(token, who string) map[string]any {
		res, b := call(t, http.MethodPost, srv.base+"/fhir/Subscription", token, nil, map[string]any{
			"resourceType": "Subscription", "status": "requested", "reason": "pain", "criteria": "Observation?code=72514-3",
			"channel": map[string]any{"type": "rest-hook", "endpoint": rcv.URL + "/" + who, "payload": "application/fhir+json"},
		})
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("%s: POST Subscription: %d %v", who, res.StatusCode, b)
		}
		return b
	}
	subscribe(ehr, "ehr")
	ns := subscribe(narrow, "narrow")
	if raw, _ := json.Marshal(ns["extension"]); !strings.Contains(string(raw), `{"url":"client","valueString":"narrow"}`) {
		t.Errorf("owner extension %s, want client narrow", raw)
	}
	var all, p1 []string
	for i, p := range []string{"p1", "p2", "p1", "p2"} {
		id := fmt.Sprintf("tok-%d", i)
		obs := map[string]any{"resourceType": "Observation", "id": id, "status": "final",
			"code":    map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "72514-3"}}},
			"subject": map[string]any{"reference": "Patient/" + p}, "valueQuantity": map[string]any{"value": i}}
		if res, b := call(t, http.MethodPut, srv.base+"/fhir/Observation/"+id, ehr, nil, obs); res.StatusCode != http.StatusCreated {
			t.Fatalf("PUT Observation: %d %v", res.StatusCode, b)
		}
		all = append(all, "/ehr/Observation/"+id)
		if p == "p1" {
			p1 = append(p1, "/narrow/Observation/"+id)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		done := len(got["ehr"]) >= len(all) && len(got["narrow"]) >= len(p1)
		mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got["ehr"], " ") != strings.Join(all, " ") {
		t.Errorf("ehr got %v, want %v", got["ehr"], all)
	}
	if strings.Join(got["narrow"], " ") != strings.Join(p1, " ") {
		t.Errorf("narrow got %v, want only Patient/p1's %v", got["narrow"], p1)
	}
}
