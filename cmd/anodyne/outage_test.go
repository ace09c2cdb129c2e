package main

import (
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
)

// TestOutageWithAuth rides out a database outage in the default
// configuration (auth and audit on, real tokens): while MongoDB is down,
// FHIR requests with a valid token, the token endpoint and /readyz answer
// 503 with Retry-After quickly (never 401, 500 or a hang); when it comes
// back the same token works again without a restart, and nothing
// acknowledged is lost.
func TestOutageWithAuth(t *testing.T) {
	outage := mongotest.NewOutage(t)
	db := outage.Start()
	store := []string{"--mongodb-uri", db.URI, "--mongodb-database", "outage_auth"}
	keyFile := filepath.Join(t.TempDir(), "etl.jwk")
	cli(t, append([]string{"clients", "add", "--id", "etl", "--generate-key", keyFile, "--scope", "system/*.cruds"}, store...)...)
	srv := startServe(t, append([]string{"--data-dir", t.TempDir()}, store...)...)
	base := srv.base + "/fhir"
	tok := strings.TrimSpace(cli(t, "token", "--client", "etl", "--key", keyFile, "--scope", "system/*.cruds", "--server", base))
	if res, _ := call(t, http.MethodPut, base+"/Patient/o1", tok, nil, map[string]any{"resourceType": "Patient", "id": "o1"}); res.StatusCode != http.StatusCreated {
		t.Fatalf("PUT before the outage: %d", res.StatusCode)
	}
	if err := db.Stop(); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 20 * time.Second}
	check := func(name string, req *http.Request) {
		t.Helper()
		began := time.Now()
		res, err := hc.Do(req)
		if err != nil {
			t.Errorf("%s during the outage: %v", name, err)
			return
		}
		res.Body.Close()
		if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
			t.Errorf("%s during the outage: %d Retry-After %q; want 503 with Retry-After", name, res.StatusCode, res.Header.Get("Retry-After"))
		}
		if took := time.Since(began); took > 10*time.Second {
			t.Errorf("%s took %v during the outage", name, took)
		}
	}
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/Patient/o1", ""},
		{"GET", "/Patient?_id=o1", ""},
		{"PUT", "/Patient/o2", `{"resourceType":"Patient","id":"o2"}`},
	} {
		req, _ := http.NewRequest(r.method, base+r.path, strings.NewReader(r.body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/fhir+json")
		check(r.method+" "+r.path, req)
	}
	ready, _ := http.NewRequest("GET", srv.base+"/readyz", nil)
	check("/readyz", ready)
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"system/*.rs"}}
	tokReq, _ := http.NewRequest("POST", srv.base+"/auth/token", strings.NewReader(form.Encode()))
	tokReq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// Without an assertion this is a client error whatever the database
	// does; what matters is that it is not a 500.
	if res, err := hc.Do(tokReq); err != nil || res.StatusCode >= 500 && res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("token endpoint during the outage: %v %v", res, err)
	} else {
		res.Body.Close()
	}

	db = outage.Start()
	t.Cleanup(func() { db.Stop() })
	var code int
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if res, _ := call(t, http.MethodGet, base+"/Patient/o1", tok, nil, nil); res.StatusCode == http.StatusOK {
			code = res.StatusCode
			break
		}
	}
	if code != http.StatusOK {
		t.Fatalf("after the database came back the token does not read Patient/o1")
	}
	if res, _ := call(t, http.MethodGet, base+"/Patient/o2", tok, nil, nil); res.StatusCode != http.StatusNotFound {
		t.Errorf("Patient/o2, refused during the outage: %d, want 404", res.StatusCode)
	}
	if res, _ := call(t, http.MethodGet, srv.base+"/readyz", "", nil, nil); res.StatusCode != http.StatusOK {
		t.Errorf("/readyz after the outage: %d", res.StatusCode)
	}
}
