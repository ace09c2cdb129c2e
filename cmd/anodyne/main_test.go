package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/fhir"
)

func TestParseServe(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(serveConfig) bool
		wantErr bool
	}{
		{"defaults", nil, nil, func(c serveConfig) bool {
			return c.Listen == "127.0.0.1:8080" && c.DataDir == "./anodyne-data" && c.Auth == "on" && c.Sec.Audit == "on" && c.MongoURI == "" && c.BaseURL == ""
		}, false},
		{"flags", []string{"--listen", ":9000", "--base-url", "https://fhir.example.org", "--data-dir", "/tmp/x"}, nil, func(c serveConfig) bool {
			return c.Listen == ":9000" && c.BaseURL == "https://fhir.example.org" && c.DataDir == "/tmp/x"
		}, false},
		{"env", nil, map[string]string{"ANODYNE_MONGODB_URI": "mongodb://db:27017", "ANODYNE_MAX_BODY": "1000", "ANODYNE_MONGODB_DATABASE": "prod"}, func(c serveConfig) bool {
			return c.MongoURI == "mongodb://db:27017" && c.MaxBody == 1000 && c.MongoDB == "prod"
		}, false},
		{"flag beats env", []string{"--listen", "127.0.0.1:1"}, map[string]string{"ANODYNE_LISTEN": "127.0.0.1:2"}, func(c serveConfig) bool {
			return c.Listen == "127.0.0.1:1"
		}, false},
		{"bad env value", nil, map[string]string{"ANODYNE_MAX_BODY": "lots"}, nil, true},
		{"auth off", []string{"--auth=off"}, nil, func(c serveConfig) bool { return c.Auth == "off" }, false},
		{"trusted issuers", []string{"--trusted-issuer", "issuer=https://kc.example/realms/a,jwks=https://kc.example/certs,scope-claim=scp,patient-claim=pid",
			"--trusted-issuer", "issuer=https://b.example,jwks=https://b.example/jwks,aud=https://fhir.example/fhir;issuer=https://c.example,jwks=https://c.example/jwks"}, nil, func(c serveConfig) bool {
			t := c.Sec.Trusted
			return len(t) == 3 && t[0].Issuer == "https://kc.example/realms/a" && t[0].JWKSURL == "https://kc.example/certs" &&
				len(t[0].Claims.Scope) == 1 && t[0].Claims.Scope[0] == "scp" && t[0].Claims.Patient == "pid" && t[0].Audience == "" &&
				t[1].Audience == "https://fhir.example/fhir" && t[2].Issuer == "https://c.example"
		}, false},
		{"trusted issuer from env", nil, map[string]string{"ANODYNE_TRUSTED_ISSUER": "issuer=https://kc.example,jwks=https://kc.example/certs"}, func(c serveConfig) bool {
			return len(c.Sec.Trusted) == 1 && c.Sec.Trusted[0].Issuer == "https://kc.example"
		}, false},
		{"trusted issuer without jwks", []string{"--trusted-issuer", "issuer=https://kc.example"}, nil, nil, true},
		{"trusted issuer relative URL", []string{"--trusted-issuer", "issuer=kc,jwks=https://kc.example/certs"}, nil, nil, true},
		{"trusted issuer unknown key", []string{"--trusted-issuer", "issuer=https://kc.example,jwks=https://kc.example/c,colour=red"}, nil, nil, true},
		{"trusted issuer with auth off", []string{"--auth=off", "--trusted-issuer", "issuer=https://kc.example,jwks=https://kc.example/c"}, nil, nil, true},
		{"admin token from env", nil, map[string]string{"ANODYNE_ADMIN_TOKEN": "0123456789abcdef0123456789abcdef"}, func(c serveConfig) bool {
			return c.Sec.AdminToken == "0123456789abcdef0123456789abcdef"
		}, false},
		{"admin token too short", []string{"--admin-token", "secret"}, nil, nil, true},
		{"oidc", []string{"--oidc-issuer", "https://login.example", "--oidc-client-id", "anodyne", "--oidc-fhir-user-claim", "fhirUser"}, map[string]string{"ANODYNE_OIDC_CLIENT_SECRET": "s"}, func(c serveConfig) bool {
			return c.Sec.OIDC.Issuer == "https://login.example" && c.Sec.OIDC.ClientID == "anodyne" && c.Sec.OIDC.ClientSecret == "s" && c.Sec.OIDC.FHIRUserClaim == "fhirUser"
		}, false},
		{"oidc without client id", []string{"--oidc-issuer", "https://login.example"}, nil, nil, true},
		{"audit junk", []string{"--audit=sometimes"}, nil, nil, true},
		{"auth junk", []string{"--auth=maybe"}, nil, nil, true},
		{"serialize default: in the store", nil, nil, func(c serveConfig) bool { return c.Serialize == "store" }, false},
		{"serialize from env", nil, map[string]string{"ANODYNE_SERIALIZE": "process"}, func(c serveConfig) bool { return c.Serialize == "process" }, false},
		{"serialize junk", []string{"--serialize=lease"}, nil, nil, true},
		{"export defaults: files in the store", nil, nil, func(c serveConfig) bool {
			var f fhir.Config
			c.Export.apply(&f)
			return f.ExportInStore && f.ExportDir == "" && f.ExportWorkers == 1 && f.LeaseTTL == 30*time.Second
		}, false},
		{"export flags", []string{"--export-dir", "/shared/exports", "--export-workers", "0", "--lease-ttl", "5s"}, nil, func(c serveConfig) bool {
			var f fhir.Config
			c.Export.apply(&f)
			return !f.ExportInStore && f.ExportDir == "/shared/exports" && f.ExportWorkers < 0 && f.LeaseTTL == 5*time.Second
		}, false},
		{"export workers negative", []string{"--export-workers", "-1"}, nil, nil, true},
		{"export lease too short", []string{"--lease-ttl", "1ms"}, nil, nil, true},
		{"unknown flag", []string{"--nope"}, nil, nil, true},
		{"stray argument", []string{"extra"}, nil, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return tc.env[k] }
			cfg, err := parseServe(tc.args, io.Discard, getenv)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && !tc.check(cfg) {
				t.Errorf("config %+v", cfg)
			}
		})
	}
}

func TestServeHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := parseServe([]string{"--help"}, &out, func(string) string { return "" })
	if err != flag.ErrHelp {
		t.Fatalf("err %v, want flag.ErrHelp", err)
	}
	for _, f := range []string{"-listen", "-base-url", "-data-dir", "-mongodb-uri", "-mongodb-database", "-auth", "-max-body", "-trusted-issuer", "-admin-token", "-oidc-issuer", "-audit", "-read-header-timeout", "-read-timeout", "-write-timeout", "-idle-timeout", "-max-header-bytes", "-max-client-requests", "-tls-cert", "-tls-key", "ANODYNE_"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("--help does not document %s:\n%s", f, out.String())
		}
	}
}

// TestServeLifecycle runs "anodyne serve" on SQLite, writes a resource,
// stops it as SIGTERM would, starts it again on the same data directory
// and reads the resource back.
func TestServeLifecycle(t *testing.T) {
	dir := t.TempDir()
	start := func() (string, context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan string, 1)
		done := make(chan error, 1)
		var logs bytes.Buffer
		go func() {
			done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--auth=off"}, io.Discard, &logs, func(string) string { return "" }, ready)
		}()
		select {
		case addr := <-ready:
			if !strings.Contains(logs.String(), "AUTHORIZATION IS OFF") {
				t.Errorf("no loud warning about auth being off in the logs:\n%s", logs.String())
			}
			return "http://" + addr, cancel, done
		case err := <-done:
			t.Fatalf("serve exited: %v", err)
		case <-time.After(60 * time.Second):
			t.Fatal("serve did not start")
		}
		return "", cancel, done
	}
	stop := func(cancel context.CancelFunc, done chan error) {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("serve returned %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("serve did not stop")
		}
	}

	base, cancel, done := start()
	for _, p := range []string{"/healthz", "/readyz", "/fhir/metadata"} {
		res, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", p, res.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodPut, base+"/fhir/Patient/life", strings.NewReader(`{"resourceType":"Patient","id":"life","active":true}`))
	req.Header.Set("Content-Type", "application/fhir+json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d", res.StatusCode)
	}
	if loc := res.Header.Get("Location"); !strings.HasPrefix(loc, base+"/fhir/Patient/life/_history/1") {
		t.Errorf("Location %q does not use the default base URL %s", loc, base)
	}
	stop(cancel, done)

	base, cancel, done = start()
	defer stop(cancel, done)
	res, err = http.Get(base + "/fhir/Patient/life")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), `"id":"life"`) {
		t.Errorf("after restart: %d %s", res.StatusCode, body)
	}
}
