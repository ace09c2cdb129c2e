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
