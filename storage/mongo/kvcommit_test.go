package mongo

import (
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/anodyne-fhir/anodyne/storage"
)

// TestCommitRecordKVCrash stops a CommitWithKV without transactions after
// its commit record is prepared or committed, as a crashed process would:
// recovery stores the puts of a committed record and drops those of a
// prepared one, with the writes.
func TestCommitRecordKVCrash(t *testing.T) {
	for _, committed := range []bool{false, true} {
		t.Run(map[bool]string{false: "prepared", true: "committed"}[committed], func(t *testing.T) {
			ctx := t.Context()
			b := fresh(t)
			if b.transactions {
				t.Skip("the deployment has transactions: no commit records")
			}
			w := storage.Write{Record: storage.Record{Type: "Patient", ID: "a", VersionID: 1, LastUpdated: time.Now(), Method: "PUT", JSON: []byte(`{}`)}}
			seq0, err := b.nextSeq(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			doc, _, err := (&Backend{}).buildCommit([]storage.Write{w}, seq0, nil)
			if err != nil {
				t.Fatal(err)
			}
			doc.KV = []kvDoc{newKVDoc("cp", []byte("done"), 0, time.Now())}
			if _, err := b.commits().InsertOne(ctx, doc); err != nil {
				t.Fatal(err)
			}
			if err := b.lockAll(ctx, &doc); err != nil {
				t.Fatal(err)
			}
			if committed {
				if _, err := b.commits().UpdateOne(ctx, bson.D{{Key: "_id", Value: doc.ID}}, bson.D{{Key: "$set", Value: bson.D{{Key: "st", Value: stCommitted}}}}); err != nil {
					t.Fatal(err)
				}
			}
			r := open(t, b.db.Name())
			defer r.Close()
			r.staleAfter = 0
			if err := r.recover(ctx); err != nil {
				t.Fatal(err)
			}
			v, err := r.KV().Get(ctx, "cp")
			_, rerr := r.Read(ctx, "Patient", "a")
			if committed {
				if err != nil || string(v) != "done" || rerr != nil {
					t.Fatalf("after roll-forward: kv %q, %v; resource %v", v, err, rerr)
				}
			} else if !errors.Is(err, storage.ErrNotFound) || !errors.Is(rerr, storage.ErrNotFound) {
				t.Fatalf("after abort: kv %q, %v; resource %v", v, err, rerr)
			}
		})
	}
}

// TestIsolatedWaitsForSlowApply: a commit record that another process is
// still applying (state commit, fresh) holds an isolated read back for as
// long as it takes, here three seconds, longer than the 200 short tries
// that used to make an import's observer searches fail on FerretDB; the
// read runs once the record is done.
func TestIsolatedWaitsForSlowApply(t *testing.T) {
	ctx := t.Context()
	b := fresh(t)
	if b.transactions {
		t.Skip("the deployment has transactions: no commit records")
	}
	if _, err := b.commits().InsertOne(ctx, bson.D{{Key: "_id", Value: "slow"}, {Key: "st", Value: stCommitted}, {Key: "at", Value: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	const apply = 12 * time.Second
	go func() {
		time.Sleep(apply)
		b.commits().UpdateOne(ctx, bson.D{{Key: "_id", Value: "slow"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "st", Value: stDone}}}})
	}()
	start, reads := time.Now(), 0
	got, err := isolated(ctx, b, func() (string, error) { reads++; return "read", nil })
	if err != nil || got != "read" {
		t.Fatalf("isolated = %q, %v after %s", got, err, time.Since(start))
	}
	if waited := time.Since(start); waited < apply || reads != 1 {
		t.Fatalf("the read ran %d times, returned after %s: it should run once, after the record was done (%s)", reads, waited, apply)
	}
}
