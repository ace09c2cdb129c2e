package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
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
