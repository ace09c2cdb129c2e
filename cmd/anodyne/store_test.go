package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDataDirLockInProcess: a second owner of a SQLite directory is
// refused with the holder's pid while the first has it open, and gets it
// once the first closes. The lock is flock(2), which conflicts between
// two open files even inside one process.
func TestDataDirLockInProcess(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := serveConfig{DataDir: dir}
	first, err := openBackend(ctx, cfg, useServe)
	if err != nil {
		t.Fatal(err)
	}
	for _, use := range []storeUse{useServe, useExport} {
		if _, err := openBackend(ctx, cfg, use); err == nil || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(err.Error(), dir) {
			t.Errorf("second open (%+v): %v, want a refusal naming pid %d and %s", use, err, os.Getpid(), dir)
		}
	}
	// Admin edits go through SQLite's own locking, next to the owner.
	edit, err := openBackend(ctx, cfg, useAdd)
	if err != nil {
		t.Fatalf("clients/users edit beside the owner: %v", err)
	}
	edit.Close()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err := openBackend(ctx, cfg, useServe)
	if err != nil {
		t.Fatalf("open after the first closed: %v", err)
	}
	second.Close()
}

// TestDataDirLockProcesses runs "anodyne serve" as a real child process:
// serve and import in this process are refused with a message naming the
// child's pid; after kill -9 of the child the directory opens at once.
func TestDataDirLockProcesses(t *testing.T) {
	dir := t.TempDir()
	cmd, _, stderr := child(t, "serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--auth=off", "--audit=off")
	waitLine(t, stderr, "anodyne listening", 60*time.Second)
	want := "in use by another anodyne process (pid " + strconv.Itoa(cmd.Process.Pid) + ")"
	for _, args := range [][]string{
		{"serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--auth=off"},
		{"import", "--data-dir", dir, "--quiet", "../../testdata/synthea"},
		{"export", "--data-dir", dir, filepath.Join(t.TempDir(), "out")},
	} {
		var out, errOut strings.Builder
		err := run(context.Background(), args, &out, &errOut, func(string) string { return "" }, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("anodyne %s beside a running server: %v, want %q", args[0], err, want)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	st, err := openBackend(context.Background(), serveConfig{DataDir: dir}, useServe)
	if err != nil {
		t.Fatalf("after kill -9 of the holder: %v", err)
	}
	st.Close()
}

// TestStoreMustExist: commands that only read or remove refuse a data
// directory that holds no store, and create nothing, at an explicit
// --data-dir or the default ./anodyne-data; the add commands of a first
// run create it (and storage/sqlite names its file as sqliteFile says).
func TestStoreMustExist(t *testing.T) {
	t.Chdir(t.TempDir())
	missing := filepath.Join(t.TempDir(), "typo")
	for _, dd := range [][]string{{"--data-dir", missing}, nil} {
		for _, args := range [][]string{
			{"clients", "list"},
			{"clients", "remove", "x"},
			{"users", "list"},
			{"users", "remove", "--username", "x"},
			{"export", "out"},
			{"version"},
			{"help"},
			{"help", "clients"},
			{"clients", "--help"},
			{"import", "--help"},
		} {
			// Flags go before positional arguments: after the command word,
			// or after the subcommand of clients and users.
			at := 1
			if args[0] == "clients" || args[0] == "users" {
				at = 2
			}
			cmdArgs := append(append(append([]string{}, args[:at]...), dd...), args[at:]...)
			if args[0] == "version" || args[0] == "help" || strings.Contains(strings.Join(args, " "), "--help") {
				cmdArgs = args
			}
			var out, errOut strings.Builder
			err := run(context.Background(), cmdArgs, &out, &errOut, func(string) string { return "" }, nil)
			isData := args[0] != "version" && args[0] != "help" && !strings.Contains(strings.Join(args, " "), "--help")
			if isData && (err == nil || !strings.Contains(err.Error(), "no Anodyne store")) {
				t.Errorf("anodyne %s: %v, want a refusal of the missing store", strings.Join(cmdArgs, " "), err)
			}
			for _, d := range []string{missing, "anodyne-data", "out"} {
				if _, serr := os.Stat(d); serr == nil {
					t.Fatalf("anodyne %s created %s", strings.Join(cmdArgs, " "), d)
				}
			}
		}
	}
	runCmd(t, false, "clients", "add", "--id", "first", "--data-dir", missing)
	if _, err := os.Stat(filepath.Join(missing, sqliteFile)); err != nil {
		t.Fatalf("clients add on a first run: %v", err)
	}
	if out := runCmd(t, false, "clients", "list", "--data-dir", missing); !strings.Contains(out, "first") {
		t.Errorf("clients list: %s", out)
	}
}

// TestMongoConnectTimeout: a MongoDB nobody answers at fails with one
// clear line naming the address (password hidden) and the flag, for serve
// and for the store commands alike.
func TestMongoConnectTimeout(t *testing.T) {
	uri := "mongodb://ops:s3cret@127.0.0.1:1/?directConnection=true"
	for _, args := range [][]string{
		{"serve", "--listen", "127.0.0.1:0", "--mongodb-uri", uri, "--mongodb-connect-timeout", "300ms", "--auth=off"},
		{"clients", "list", "--mongodb-uri", uri, "--mongodb-connect-timeout", "300ms"},
	} {
		code, _, _ := runCode(t, args...)
		msg := runErr(t, args...)
		if code != 1 || !strings.Contains(msg, "cannot reach MongoDB at mongodb://ops:xxxxx@127.0.0.1:1") || !strings.Contains(msg, "within 300ms (--mongodb-connect-timeout)") ||
			strings.Contains(msg, "s3cret") || strings.Contains(msg, "topology") {
			t.Errorf("anodyne %s: status %d, %q", args[0], code, msg)
		}
	}
	if code, _, _ := runCode(t, "clients", "list", "--mongodb-uri", uri, "--mongodb-connect-timeout", "0s"); code != 2 {
		t.Errorf("--mongodb-connect-timeout 0: status %d, want 2", code)
	}
}
