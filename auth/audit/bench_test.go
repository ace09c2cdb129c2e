package audit_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/anodyne-fhir/anodyne/auth/audit"
)

// BenchmarkRecordAudit: one event through each sink on the real SQLite
// store, from 8 goroutines (go test -bench RecordAudit ./auth/audit/).
func BenchmarkRecordAudit(b *testing.B) {
	for _, sink := range []string{"group-commit", "journal", "prepare-only"} {
		b.Run(sink, func(b *testing.B) {
			be, reg := openStore(b, filepath.Join(b.TempDir(), "db"))
			defer be.Close()
			var record func(int) error
			switch sink {
			case "group-commit":
				g := audit.NewGroupCommit(be, reg, nil)
				defer g.Close()
				record = func(i int) error { return g.RecordAudit(context.Background(), event(i)) }
			case "journal":
				j, err := audit.OpenJournal(context.Background(), filepath.Join(b.TempDir(), "j"), be, reg, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer j.Close()
				record = func(i int) error { return j.RecordAudit(context.Background(), event(i)) }
			default:
				s := audit.New(be, reg)
				record = func(i int) error { _, err := s.PrepareAudit(event(i)); return err }
			}
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if err := record(i); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
		})
	}
}
