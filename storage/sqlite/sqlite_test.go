package sqlite

import (
	"path/filepath"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/storagetest"
)

func openT(t *testing.T, dir string) *Backend {
	t.Helper()
	b, err := Open(t.Context(), dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return b
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, storagetest.Harness{
		New: func(t *testing.T) storage.Backend { return openT(t, t.TempDir()) },
		Reopen: func(t *testing.T, old storage.Backend) storage.Backend {
			return openT(t, filepath.Dir(old.(*Backend).Path()))
		},
	})
}
