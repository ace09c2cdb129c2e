package mongo

import (
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/anodyne-fhir/anodyne/storage"
)

// TestInterruptedWriteLeftovers simulates a process that died in the
// middle of a non-transactional write by writing its leftovers directly,
// and checks that later writers treat them as conflicts while they may
// belong to a write in flight, and clean them up once they are stale.
func TestInterruptedWriteLeftovers(t *testing.T) {
	ctx := t.Context()
	put := func(b *Backend, id string, expect int64, claim string) error {
		_, err := b.Commit(ctx, storage.Write{
			Record:        storage.Record{Type: "Patient", ID: id, VersionID: expect + 1, LastUpdated: time.Now(), Method: "PUT", JSON: []byte(`{"v":1}`)},
			ExpectVersion: expect,
			Claim:         claim,
		})
		return err
	}
	tests := []struct {
		name     string
		leftover func(b *Backend) error
		write    func(b *Backend) error
		conflict error // expected while the leftover is fresh
		after    func(t *testing.T, b *Backend)
	}{
		{
			name: "history written, resource not updated",
			leftover: func(b *Backend) error {
				_, err := b.hist.InsertOne(ctx, historyDoc{ID: historyKey("Patient", "p1", 2), Type: "Patient", LID: "p1", Version: 2, Seq: 1 << 40, Wall: time.Now()})
				return err
			},
			write:    func(b *Backend) error { return put(b, "p1", 1, "") },
			conflict: storage.ErrVersionConflict,
			after: func(t *testing.T, b *Backend) {
				r, err := b.ReadVersion(ctx, "Patient", "p1", 2)
				if err != nil || r.Seq == 1<<40 || string(r.JSON) != `{"v":1}` {
					t.Fatalf("version 2 is still the leftover: %+v, %v", r, err)
				}
			},
		},
		{
			name: "claim taken, resource never written",
			leftover: func(b *Backend) error {
				_, err := b.claims.InsertOne(ctx, bson.D{{Key: "_id", Value: "hash-1"}, {Key: "r", Value: "Patient/ghost"}, {Key: "at", Value: time.Now()}})
				return err
			},
			write:    func(b *Backend) error { return put(b, "p2", 0, "hash-1") },
			conflict: storage.ErrDuplicateClaim,
			after: func(t *testing.T, b *Backend) {
				var c struct {
					R string `bson:"r"`
				}
				if err := b.claims.FindOne(ctx, bson.D{{Key: "_id", Value: "hash-1"}}).Decode(&c); err != nil || c.R != "Patient/p2" {
					t.Fatalf("claim holder = %q, %v; want Patient/p2", c.R, err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := fresh(t)
			if b.transactions {
				t.Skip("with transactions a write leaves no leftovers")
			}
			if err := put(b, "p1", 0, ""); err != nil {
				t.Fatal(err)
			}
			if err := tt.leftover(b); err != nil {
				t.Fatal(err)
			}
			if err := tt.write(b); !errors.Is(err, tt.conflict) {
				t.Fatalf("write over a fresh leftover: %v, want %v", err, tt.conflict)
			}
			b.staleAfter = 0 // the leftover is now older than any write in flight
			if err := tt.write(b); err != nil {
				t.Fatalf("write over a stale leftover: %v", err)
			}
			tt.after(t, b)
		})
	}
}
