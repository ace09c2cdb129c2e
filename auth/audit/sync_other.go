//go:build !linux

package audit

import "os"

func datasync(f *os.File) error { return f.Sync() }

// preallocate writes nothing where fallocate is not available: appends
// then grow the file and f.Sync covers the metadata.
func preallocate(*os.File, int64) error { return nil }
