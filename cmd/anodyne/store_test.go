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
