package mongo

import (
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
	"github.com/anodyne-fhir/anodyne/storage/storagetest"
)

// TestConformance runs the shared backend suite on the test server: the
// embedded FerretDB, or the MongoDB of ANODYNE_TEST_MONGODB_URI.
func TestConformance(t *testing.T) {
	var names dbs
	srv := server.Get(t)
	if srv.FerretDB {
		t.Log("running on embedded FerretDB: no transactions (AtomicCommit=false), no $elemMatch (Go-side re-check)")
	}
	storagetest.Run(t, storagetest.Harness{
		New: func(t *testing.T) storage.Backend {
			name := mongotest.Database(t)
			b := open(t, name)
			names.put(b, name)
			return b
		},
		Reopen: func(t *testing.T, old storage.Backend) storage.Backend {
			name := names.get(old.(*Backend))
			if name == "" {
				t.Fatal("reopen: unknown backend")
			}
			b := open(t, name)
			names.put(b, name)
			return b
		},
	})
}
