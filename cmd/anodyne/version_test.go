package main

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
)

func TestVersionCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, &errOut, func(string) string { return "" }, nil); err != nil {
		t.Fatalf("version: %v (stderr %q)", err, errOut.String())
	}
	got := out.String()
	if !strings.HasPrefix(got, "anodyne ") || !strings.Contains(got, "\ncommit ") || !strings.Contains(got, runtime.Version()) {
		t.Errorf("version output %q lacks module version, commit or Go version %s", got, runtime.Version())
	}
}
