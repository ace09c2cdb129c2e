package mongo

import (
	"errors"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/anodyne-fhir/anodyne/storage"
)

// TestCommitRecordCrash stops a multi-write commit after each step, as a
// crashed process would, and checks what readers see and what recovery
// (at the next Open) makes of it.
func TestCommitRecordCrash(t *testing.T) {
	tests := []struct {
		name      string
		committed bool // crash after the commit point (else before it)
	}{
		{"prepared", false},
		{"committed", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			b := fresh(t)
			if b.transactions {
				t.Skip("the deployment has transactions: no commit records")
			}
			tokEntry := func(code string) []storage.Entry {
				return []storage.Entry{{Param: "code", Kind: storage.KindToken, System: "s", Code: code}}
			}
			write := func(id string, expect int64, code string) storage.Write {
				return storage.Write{Record: storage.Record{Type: "Patient", ID: id, VersionID: expect + 1, LastUpdated: time.Now(), Method: "PUT",
					JSON: []byte(`{"code":"` + code + `"}`)}, ExpectVersion: expect, Index: tokEntry(code)}
			}
			if _, err := b.Commit(ctx, write("a", 0, "old")); err != nil {
				t.Fatal(err)
			}
			// The commit: update a, create n.
			ws := []storage.Write{write("a", 1, "new"), write("n", 0, "new")}
			ws[1].Events = []storage.Event{{Stream: "s", ID: "e1", Data: []byte("x")}}
			if _, err := b.Commit(ctx, storage.Write{Record: write("b", 0, "b").Record,
				Events: []storage.Event{{Stream: "s", ID: "e0", Data: []byte("y")}}}); err != nil {
				t.Fatal(err)
			}
			seq0, err := b.nextSeq(ctx, 2)
			if err != nil {
				t.Fatal(err)
			}
			doc, _, err := (&Backend{}).buildCommit(ws, seq0, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.commits().InsertOne(ctx, doc); err != nil {
				t.Fatal(err)
			}
			if err := b.lockAll(ctx, &doc); err != nil {
				t.Fatal(err)
			}
			if tt.committed {
				if _, err := b.commits().UpdateOne(ctx, bson.D{{Key: "_id", Value: doc.ID}}, bson.D{{Key: "$set", Value: bson.D{{Key: "st", Value: stCommitted}}}}); err != nil {
					t.Fatal(err)
				}
			}

			// What readers see before recovery: all of the commit or none.
			a, err := b.Read(ctx, "Patient", "a")
			if err != nil {
				t.Fatal(err)
			}
			_, errN := b.Read(ctx, "Patient", "n")
			_, errV := b.ReadVersion(ctx, "Patient", "a", 2)
			h, err := b.History(ctx, storage.HistoryRequest{})
			if err != nil {
				t.Fatal(err)
			}
			// The outbox is read up to the undecided event, never past it.
			evs, err := b.OutboxRead(ctx, "s", 10)
			if err != nil || len(evs) != 1 || evs[0].ID != "e0" {
				t.Fatalf("outbox before recovery: %v %v, want e0 only", evs, err)
			}
			if tt.committed {
				if a.VersionID != 2 || errN != nil || errV != nil || len(h.Records) != 4 {
					t.Fatalf("committed record not fully visible: a v%d, read n: %v, read a/2: %v, history %d", a.VersionID, errN, errV, len(h.Records))
				}
			} else {
				if a.VersionID != 1 || !errors.Is(errN, storage.ErrNotFound) || !errors.Is(errV, storage.ErrNotFound) || len(h.Records) != 2 {
					t.Fatalf("prepared record partly visible: a v%d, read n: %v, read a/2: %v, history %d", a.VersionID, errN, errV, len(h.Records))
				}
				// A prepared record holds its locks: a competing write conflicts.
				if _, err := b.Commit(ctx, write("a", 1, "other")); !errors.Is(err, storage.ErrVersionConflict) {
					t.Fatalf("write over a prepared commit's lock: %v, want ErrVersionConflict", err)
				}
			}

			// Recovery at the next Open, once the record is older than any
			// commit in flight.
			name := b.db.Name()
			r := open(t, name) // recovery is skipped: the record is fresh
			r.staleAfter = 0
			if err := r.recover(ctx); err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			q := storage.Query{Types: []string{"Patient"}, Filter: storage.Match{Param: "code", Kind: storage.KindToken,
				Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "new"}}, Count: 10}
			p, err := r.Search(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, rec := range p.Records {
				got = append(got, rec.ID)
			}
			want := []string(nil)
			if tt.committed {
				want = []string{"a", "n"}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("after recovery, code=new finds %v, want %v", got, want)
			}
			evs, err = r.OutboxRead(ctx, "s", 10)
			var ids []string
			for _, ev := range evs {
				ids = append(ids, ev.ID)
			}
			wantEv := []string{"e0"}
			if tt.committed {
				wantEv = []string{"e0", "e1"}
			}
			if err != nil || !slices.Equal(ids, wantEv) {
				t.Fatalf("outbox after recovery: %v %v, want %v", ids, err, wantEv)
			}
			n, err := r.commits().CountDocuments(ctx, bson.D{{Key: "st", Value: bson.D{{Key: "$ne", Value: stDone}}}})
			if err != nil || n != 0 {
				t.Fatalf("%d unsettled commit records after recovery (%v)", n, err)
			}
			// The store accepts writes on top of the recovered state.
			next := int64(1)
			if tt.committed {
				next = 2
			}
			if _, err := r.Commit(ctx, write("a", next, "later")); err != nil {
				t.Fatalf("write after recovery: %v", err)
			}
		})
	}
}
