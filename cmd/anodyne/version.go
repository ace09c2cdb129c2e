package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// versionCommand prints the module version, the VCS commit the binary was
// built from and the Go version, so a bug report names the exact build.
func versionCommand(stdout io.Writer) error {
	version, commit, modified := "(unknown)", "(unknown)", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = " (modified)"
				}
			}
		}
	}
	_, err := fmt.Fprintf(stdout, "anodyne %s\ncommit %s%s\n%s\n", version, commit, modified, runtime.Version())
	return err
}
