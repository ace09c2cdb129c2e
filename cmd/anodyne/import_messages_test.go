package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestImportMessages: an import that cannot run says why (a missing path,
// a server not running, a forgotten or useless token) instead of calling
// it an interruption to resume.
func TestImportMessages(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "p.ndjson")
	if err := os.WriteFile(bundle, []byte(`{"resourceType":"Patient","id":"m1"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "reader.jwk")
	cli(t, "clients", "add", "--data-dir", dir, "--id", "reader", "--generate-key", keyFile, "--scope", "system/Patient.rs")
	srv := startServe(t, "--data-dir", dir, "--audit=off")
	base := srv.base + "/fhir"
	reader := strings.TrimSpace(cli(t, "token", "--client", "reader", "--key", keyFile, "--scope", "system/Patient.rs", "--server", base))
	state := filepath.Join(t.TempDir(), "state.json")

	for _, tc := range []struct {
		name    string
		args    []string
		want    []string
		notWant string
	}{
		{"missing path", []string{"import", "--data-dir", t.TempDir(), filepath.Join(dir, "nope.ndjson")}, []string{"nope.ndjson", "no such file"}, "interrupted"},
		{"server not running", []string{"import", "--state", state, "--server", "http://127.0.0.1:1/fhir", bundle}, []string{"cannot reach the server at http://127.0.0.1:1/fhir", "connection refused"}, "interrupted"},
		{"no token", []string{"import", "--state", state, "--server", base, bundle}, []string{"401", "--token"}, "interrupted"},
		{"bad token", []string{"import", "--state", state, "--server", base, "--token", "not-a-token", bundle}, []string{"401", "not accepted"}, "interrupted"},
		{"read-only token", []string{"import", "--state", state, "--server", base, "--token", reader, bundle}, []string{"403", "scopes"}, "interrupted"},
	} {
		code, _, _ := runCode(t, tc.args...)
		msg := runErr(t, tc.args...)
		if code != 1 {
			t.Errorf("%s: exit status %d, want 1", tc.name, code)
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: %q does not say %q", tc.name, msg, w)
			}
		}
		if strings.Contains(msg, tc.notWant) {
			t.Errorf("%s: %q calls it %s", tc.name, msg, tc.notWant)
		}
	}
}

// TestProgressBarEnd: the last line of a completed import reads 100 %,
// with the counts, rate and elapsed time in human units.
func TestProgressBarEnd(t *testing.T) {
	var buf bytes.Buffer
	bar := &progressBar{w: &buf, on: true, start: time.Now().Add(-75 * time.Second)}
	bar.update(10, 100, 12_000, 3)
	bar.update(60, 100, 40_000, 3) // within 100 ms of the last draw: not drawn
	bar.finish(true, 123_456, 3)
	lines := strings.Split(buf.String(), "\r")
	last := lines[len(lines)-1]
	for _, w := range []string{"100%", "123k resources", "1.65k/s", "3 failed", "1m15s"} {
		if !strings.Contains(last, w) {
			t.Errorf("last progress line %q lacks %q", last, w)
		}
	}
	if !strings.HasSuffix(last, "\n") {
		t.Errorf("last progress line %q does not end the line", last)
	}
	// An interrupted import stops where it was.
	buf.Reset()
	bar = &progressBar{w: &buf, on: true, start: time.Now()}
	bar.update(30, 100, 10, 0)
	bar.finish(false, 10, 0)
	if lines := strings.Split(buf.String(), "\r"); !strings.Contains(lines[len(lines)-1], " 30%") {
		t.Errorf("interrupted: last line %q, want 30%%", lines[len(lines)-1])
	}
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{{850 * time.Millisecond, "850ms"}, {12400 * time.Millisecond, "12.4s"}, {187 * time.Second, "3m07s"}, {62 * time.Minute, "1h02m"}} {
		if got := humanDuration(tc.d); got != tc.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
