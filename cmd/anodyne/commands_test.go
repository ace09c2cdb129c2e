package main

import (
	"context"
	"os"
	"strings"
	"testing"
)

// runCode runs one command line as main would and returns its exit
// status, stdout and stderr.
func runCode(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut strings.Builder
	err := run(context.Background(), args, &out, &errOut, func(string) string { return "" }, nil)
	return exitCode(err), out.String(), errOut.String()
}

// TestCommandHelp goes over the command table: every command and
// subcommand answers -h, --help and "anodyne help ..." with its usage on
// stdout and status 0, touching no store; a flag it does not have is a
// usage error (status 2, usage on stderr); the top-level usage lists
// every command of the table.
func TestCommandHelp(t *testing.T) {
	t.Chdir(t.TempDir())
	subs := map[string][]string{"clients": {"add", "list", "remove"}, "users": {"add", "list", "remove"}}
	var lines [][]string // command words, e.g. {"clients", "add"}
	for _, c := range commands() {
		if c.summary == "" || c.run == nil {
			t.Errorf("command %q has no summary or run", c.name)
		}
		lines = append(lines, []string{c.name})
		for _, s := range subs[c.name] {
			lines = append(lines, []string{c.name, s})
		}
	}
	if len(lines) < 12 {
		t.Fatalf("only %d command lines in the table", len(lines))
	}
	for _, words := range lines {
		name := strings.Join(words, " ")
		for _, form := range [][]string{
			append(append([]string{}, words...), "--help"),
			append(append([]string{}, words...), "-h"),
			append([]string{"help"}, words...),
		} {
			code, out, errOut := runCode(t, form...)
			if code != 0 || errOut != "" {
				t.Errorf("anodyne %s: status %d, stderr %q", strings.Join(form, " "), code, errOut)
			}
			want := "Usage: anodyne " + name
			if words[0] == "help" {
				want = "Usage:\n  anodyne serve"
			}
			if !strings.Contains(out, want) {
				t.Errorf("anodyne %s: stdout lacks %q:\n%s", strings.Join(form, " "), want, out)
			}
		}
		if words[0] == "help" {
			continue
		}
		code, out, errOut := runCode(t, append(append([]string{}, words...), "--no-such-flag")...)
		if code != 2 || out != "" || !strings.Contains(errOut, "Usage: anodyne "+words[0]) {
			t.Errorf("anodyne %s --no-such-flag: status %d, stdout %q, stderr %q", name, code, out, errOut)
		}
	}
	if _, err := os.Stat("anodyne-data"); err == nil {
		t.Error("a help request created ./anodyne-data")
	}

	code, out, _ := runCode(t, "help")
	for _, c := range commands() {
		if !strings.Contains(out, "anodyne "+c.name) || !strings.Contains(out, c.summary) {
			t.Errorf("usage does not list %s: %s", c.name, out)
		}
	}
	if code != 0 {
		t.Errorf("help: status %d", code)
	}
	for _, args := range [][]string{
		nil, {"bogus"}, {"help", "bogus"}, {"clients"}, {"clients", "frobnicate"}, {"users"},
		{"import", "--quiet"}, {"export"}, {"clients", "add"}, {"clients", "remove"}, {"users", "remove"},
		{"serve", "--auth=maybe"}, {"serve", "stray"}, {"version", "extra"},
	} {
		code, out, errOut := runCode(t, args...)
		if code != 2 || out != "" || !strings.Contains(errOut, "Usage") {
			t.Errorf("anodyne %s: status %d, stdout %q, stderr %q; want 2 with the usage on stderr", strings.Join(args, " "), code, out, errOut)
		}
	}
	if code, _, _ := runCode(t, "clients", "list", "--data-dir", "nowhere"); code != 1 {
		t.Errorf("a runtime failure exits %d, want 1", code)
	}
}
