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
	harness := func(dbPaging, goAggregate bool) storagetest.Harness {
		return storagetest.Harness{
			New: func(t *testing.T) storage.Backend {
				name := mongotest.Database(t)
				b := open(t, name)
				b.dbPaging = b.dbPaging || dbPaging
				b.aggPipeline = b.aggPipeline && !goAggregate
				names.put(b, name)
				return b
			},
			Reopen: func(t *testing.T, old storage.Backend) storage.Backend {
				name := names.get(old.(*Backend))
				if name == "" {
					t.Fatal("reopen: unknown backend")
				}
				b := open(t, name)
				b.dbPaging = b.dbPaging || dbPaging
				b.aggPipeline = b.aggPipeline && !goAggregate
				names.put(b, name)
				return b
			},
		}
	}
	t.Run("Default", func(t *testing.T) { storagetest.Run(t, harness(false, false)) })
	if srv.FerretDB {
		// The server-side paging path is the default on MongoDB; run it on
		// FerretDB too so that it is exercised without a MongoDB at hand.
		t.Run("DBPaging", func(t *testing.T) { storagetest.Run(t, harness(true, false)) })
	} else {
		// The aggregation pipeline is the default on MongoDB; the Go-side
		// reduction FerretDB uses must give the same answers there.
		t.Run("GoAggregate", func(t *testing.T) { storagetest.Run(t, harness(false, true)) })
	}
}
