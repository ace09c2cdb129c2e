package main

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	driver "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/lease"
	"github.com/anodyne-fhir/anodyne/storage/mongo"
)

// TestExpirySweepUnderLease: two backends on one FerretDB database (two
// processes; FerretDB has no TTL index, so expired KV records stay stored
// until swept). While one holds the sweep lease the other sweeps nothing;
// the holder removes every expired record, in several batches, and no
// live one; the documents left are counted in the collection itself.
func TestExpirySweepUnderLease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	uri, db := ownFerretDB(ctx, t)
	open := func() *mongo.Backend {
		t.Helper()
		be, err := mongo.Open(ctx, uri, db)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { be.Close() })
		return be
	}
	a, b := open(), open()
	if _, ok := storage.As[storage.ExpirySweeper](a); !ok {
		t.Fatal("the mongo backend has no expiry sweep")
	}
	const expired, live = sweepBatch + 20, 7
	for i := range expired {
		if err := a.KV().Put(ctx, fmt.Sprintf("sweep/old/%04d", i), []byte("x"), 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	for i := range live {
		ttl := time.Duration(0)
		if i%2 == 1 {
			ttl = time.Hour
		}
		if err := a.KV().Put(ctx, fmt.Sprintf("sweep/live/%d", i), []byte("y"), ttl); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)

	client, err := driver.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	stored := func(prefix string) int64 {
		t.Helper()
		n, err := client.Database(db).Collection("kv").CountDocuments(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$regex", Value: "^" + prefix}}}})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := stored("sweep/old/"); n != expired {
		t.Fatalf("%d expired records stored before the sweep, want %d (is there a TTL index?)", n, expired)
	}

	// Process a holds the sweep lease (as while it sweeps): b leaves it.
	if ok, err := lease.Acquire(ctx, a.KV(), sweepLeaseKey, "process-a", time.Minute); err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	n, held, err := sweepOnce(ctx, b.KV(), b, "process-b", time.Second)
	if err != nil || held || n != 0 {
		t.Fatalf("b swept while a held the lease: removed %d, held %v, %v", n, held, err)
	}
	if n := stored("sweep/old/"); n != expired {
		t.Fatalf("%d expired records left after b's refused sweep, want %d", n, expired)
	}
	if err := lease.Release(ctx, a.KV(), sweepLeaseKey, "process-a"); err != nil {
		t.Fatal(err)
	}
	n, held, err = sweepOnce(ctx, b.KV(), b, "process-b", 10*time.Second)
	if err != nil || !held || n != expired {
		t.Fatalf("b's sweep: removed %d, held %v, %v; want %d", n, held, err, expired)
	}
	if n := stored("sweep/old/"); n != 0 {
		t.Errorf("%d expired records left after the sweep", n)
	}
	if n := stored("sweep/live/"); n != live {
		t.Errorf("%d live records left, want %d", n, live)
	}
	if _, err := lease.Holder(ctx, a.KV(), sweepLeaseKey); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the sweep lease is still held after the sweep: %v", err)
	}
}
