package main

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/apps/clinician"
	"github.com/anodyne-fhir/anodyne/auth/smart"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// demoRun is a running "anodyne demo": its root URL and what it printed.
type demoRun struct {
	base, out string
	stop      func()
}

func startDemo(t *testing.T, args ...string) *demoRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	out, logs := &syncBuffer{}, &syncBuffer{}
	go func() {
		done <- run(ctx, append([]string{"demo", "--listen", "127.0.0.1:0", "--audit=off"}, args...), out, logs, func(string) string { return "" }, ready)
	}()
	r := &demoRun{}
	var stopped bool
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("demo returned %v\n%s", err, logs)
			}
		case <-time.After(30 * time.Second):
			t.Error("demo did not stop")
		}
	}
	select {
	case addr := <-ready:
		r.base = "http://" + addr
	case err := <-done:
		cancel()
		t.Fatalf("demo exited: %v\n%s", err, logs)
	case <-time.After(5 * time.Minute):
		cancel()
		t.Fatal("demo did not start")
	}
	r.out = out.String()
	t.Cleanup(r.stop)
	return r
}

var passwordLine = regexp.MustCompile(`with password  ([a-z2-7]{20})`)

// TestDemoCommand runs "anodyne demo" twice on one data directory: the
// first run stores the data set, the second stores nothing; each prints a
// password that the stored account accepts, registers the EHR client and
// the clinician app, serves the app, and prints its URL.
func TestDemoCommand(t *testing.T) {
	dir := t.TempDir()
	first := startDemo(t, "--data-dir", dir, "--patients", "2", "--days", "5")
	m := regexp.MustCompile(`(\d+) resources stored, (\d+) already there`).FindStringSubmatch(first.out)
	if m == nil || m[1] == "0" || m[2] != "0" {
		t.Fatalf("first run printed:\n%s", first.out)
	}
	stored := m[1]
	if !strings.Contains(first.out, first.base+"/apps/clinician/launch.html") {
		t.Errorf("no worklist URL in:\n%s", first.out)
	}
	res, err := http.Get(first.base + clinician.Path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Security-Policy") == "" || len(body) == 0 {
		t.Errorf("GET %s: %d, CSP %q", clinician.Path, res.StatusCode, res.Header.Get("Content-Security-Policy"))
	}
	pw1 := passwordLine.FindStringSubmatch(first.out)
	first.stop()

	second := startDemo(t, "--data-dir", dir, "--patients", "2", "--days", "5")
	if !strings.Contains(second.out, " 0 resources stored, "+stored+" already there") {
		t.Fatalf("second run printed:\n%s", second.out)
	}
	pw2 := passwordLine.FindStringSubmatch(second.out)
	second.stop()
	if pw1 == nil || pw2 == nil || pw1[1] == pw2[1] {
		t.Fatalf("passwords %v %v: want two different printed ones", pw1, pw2)
	}

	be, err := sqlite.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	acct, err := smart.NewAccountStore(be.KV()).Get(context.Background(), demoUser)
	if err != nil {
		t.Fatal(err)
	}
	for pw, want := range map[string]bool{pw2[1]: true, pw1[1]: false} {
		if ok, err := smart.CheckPassword(acct.PasswordHash, pw); ok != want || err != nil {
			t.Errorf("password %s accepted=%v (%v), want %v", pw, ok, err, want)
		}
	}
	if acct.FHIRUser != "Practitioner/demo-clinician" || len(acct.Patients) != 2 {
		t.Errorf("account %+v", acct)
	}
	cs := smart.NewClientStore(be.KV())
	ehr, err := cs.Get(context.Background(), demoEHRClient)
	if err != nil || !ehr.LaunchEHR || ehr.Type != smart.ClientAsymmetric {
		t.Errorf("EHR client %+v, %v", ehr, err)
	}
	app, err := cs.Get(context.Background(), clinician.ClientID)
	if err != nil || app.Type != smart.ClientPublic || app.RedirectURIs[0] != second.base+clinician.Path {
		t.Errorf("app client %+v, %v", app, err)
	}
	if !strings.Contains(second.out, filepath.Join(dir, demoEHRKey)) {
		t.Errorf("key file not named in:\n%s", second.out)
	}
}
