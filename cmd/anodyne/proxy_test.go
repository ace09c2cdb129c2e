package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestProxyTrust(t *testing.T) {
	nets, err := parseTrustedProxies("10.0.0.0/8, 192.0.2.10,2001:db8:p::/48")
	if err == nil {
		t.Fatalf("a malformed CIDR was accepted: %v", nets)
	}
	nets, err = parseTrustedProxies("10.0.0.0/8, 192.0.2.10,2001:db8:1::/48")
	if err != nil {
		t.Fatal(err)
	}
	p := newProxyTrust(nets)
	tests := []struct {
		name, peer string
		xff        []string
		realIP     string
		want       string
	}{
		{"no headers", "10.1.2.3:4000", nil, "", "10.1.2.3:4000"},
		{"trusted peer, one hop", "10.1.2.3:4000", []string{"203.0.113.7"}, "", "203.0.113.7:0"},
		{"untrusted peer: headers ignored", "198.51.100.9:4000", []string{"203.0.113.7"}, "203.0.113.8", "198.51.100.9:4000"},
		{"client-written entries left of the proxy's are not taken", "10.1.2.3:4000", []string{"1.2.3.4, 203.0.113.7"}, "", "203.0.113.7:0"},
		{"trusted hops are skipped", "10.1.2.3:4000", []string{"203.0.113.7, 10.9.9.9", "192.0.2.10"}, "", "203.0.113.7:0"},
		{"a single trusted IP", "192.0.2.10:80", []string{"203.0.113.7"}, "", "203.0.113.7:0"},
		{"next to the single trusted IP: not trusted", "192.0.2.11:80", []string{"203.0.113.7"}, "", "192.0.2.11:80"},
		{"unparsable entry: the peer", "10.1.2.3:4000", []string{"203.0.113.7, bogus"}, "", "10.1.2.3:4000"},
		{"X-Forwarded-For wins over X-Real-IP", "10.1.2.3:4000", []string{"203.0.113.7"}, "203.0.113.99", "203.0.113.7:0"},
		{"X-Real-IP alone", "10.1.2.3:4000", nil, "203.0.113.99", "203.0.113.99:0"},
		{"X-Real-IP not an address", "10.1.2.3:4000", nil, "evil", "10.1.2.3:4000"},
		{"IPv6 proxy and client", "[2001:db8:1::5]:443", []string{"2001:db8:ff::1"}, "", "[2001:db8:ff::1]:0"},
		{"loopback is not trusted unless listed", "127.0.0.1:5000", []string{"203.0.113.7"}, "", "127.0.0.1:5000"},
		{"private network is not trusted unless listed", "172.16.0.1:5000", []string{"203.0.113.7"}, "", "172.16.0.1:5000"},
	}
	for _, tc := range tests {
		r, _ := http.NewRequest("GET", "http://x/", nil)
		r.RemoteAddr = tc.peer
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if tc.realIP != "" {
			r.Header.Set("X-Real-IP", tc.realIP)
		}
		if got := p.resolve(r).RemoteAddr; got != tc.want {
			t.Errorf("%s: RemoteAddr %q, want %q", tc.name, got, tc.want)
		}
		if r.RemoteAddr != tc.peer {
			t.Errorf("%s: the original request was changed", tc.name)
		}
	}
	// No --trusted-proxy: nothing is believed.
	var none *proxyTrust = newProxyTrust(nil)
	r, _ := http.NewRequest("GET", "http://x/", nil)
	r.RemoteAddr = "10.1.2.3:4000"
	r.Header.Set("X-Forwarded-For", "203.0.113.7")
	if got := none.resolve(r).RemoteAddr; got != "10.1.2.3:4000" {
		t.Errorf("without trusted proxies: %q", got)
	}
}

// TestServeTrustedProxy runs serve twice over real HTTP with audit on:
// with --trusted-proxy covering the loopback peer, the AuditEvents of
// requests carrying X-Forwarded-For / X-Real-IP record the client address
// the proxy names (the rightmost untrusted one, never one the client
// wrote to its left); without the flag the same headers change nothing.
func TestServeTrustedProxy(t *testing.T) {
	key, jwks := es384(t)
	count := func(srv *running, tok, query string) int {
		t.Helper()
		res, b := call(t, "GET", srv.base+"/fhir/AuditEvent?_summary=count&"+query, tok, nil, nil)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("audit search %s: %d %v", query, res.StatusCode, b)
		}
		return int(b["total"].(float64))
	}
	for _, trusted := range []bool{true, false} {
		dir := t.TempDir()
		jwksFile := filepath.Join(dir, "jwks.json")
		if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
			t.Fatal(err)
		}
		cli(t, "clients", "add", "--data-dir", dir, "--id", "etl", "--type", "confidential-asymmetric", "--jwks-file", jwksFile,
			"--scope", "system/Patient.rs system/AuditEvent.rs")
		args := []string{"--data-dir", dir}
		if trusted {
			args = append(args, "--trusted-proxy", "127.0.0.0/8,::1")
		}
		srv := startServe(t, args...)
		tok := backendToken(t, srv.base, "etl", key, "system/Patient.rs system/AuditEvent.rs")
		probes := []map[string]string{
			{"X-Forwarded-For": "198.51.100.1, 203.0.113.7"},
			{"X-Real-IP": "192.0.2.44"},
			{"X-Forwarded-For": "203.0.113.8, garbage"},
		}
		for i, h := range probes {
			// A read of an absent Patient: its AuditEvent names it, which
			// tells when the audit writer has stored it.
			if res, b := call(t, "GET", fmt.Sprintf("%s/fhir/Patient/probe%d", srv.base, i), tok, h, nil); res.StatusCode != http.StatusNotFound {
				t.Fatalf("read through the proxy: %d %v", res.StatusCode, b)
			}
		}
		for i := range probes {
			for deadline := time.Now().Add(5 * time.Second); count(srv, tok, fmt.Sprintf("entity=Patient/probe%d", i)) == 0; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the AuditEvent of probe %d was not stored", i)
				}
			}
		}
		got := map[string]int{}
		for _, a := range []string{"203.0.113.7", "192.0.2.44", "198.51.100.1", "203.0.113.8", "127.0.0.1"} {
			got[a] = count(srv, tok, "entity:Patient=probe0,probe1,probe2&address="+a)
		}
		want := map[string]int{"203.0.113.7": 0, "192.0.2.44": 0, "198.51.100.1": 0, "203.0.113.8": 0, "127.0.0.1": 3}
		if trusted {
			want = map[string]int{"203.0.113.7": 1, "192.0.2.44": 1, "198.51.100.1": 0, "203.0.113.8": 0, "127.0.0.1": 1}
		}
		for a, w := range want {
			if got[a] != w {
				t.Errorf("trusted=%v: probe AuditEvents at %s: %d, want %d", trusted, a, got[a], w)
			}
		}
	}
}
