package audit_test

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"

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

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkJournalStore: the process CPU per read event, journaled by 16
// goroutines and then stored as AuditEvent resources (WaitStored) on the
// real SQLite store: what the audit trail costs a server per read, beside
// the read itself. Wall time per op is mostly fsync waits; cpu-us/event is
// the figure (go test -bench JournalStore ./auth/audit/).
func BenchmarkJournalStore(b *testing.B) {
	be, reg := openStore(b, filepath.Join(b.TempDir(), "db"))
	defer be.Close()
	j, err := audit.OpenJournal(context.Background(), filepath.Join(b.TempDir(), "j"), be, reg, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	c0 := cpuTime()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			ev := auth.AuditEvent{Time: time.Now(), Interaction: "read", Action: "R", Type: "Observation", IDs: []string{fmt.Sprintf("obs-%d", i)},
				Outcome: 200, ClientID: "bench-client", Source: "http://localhost:8080/fhir", RemoteAddr: "127.0.0.1"}
			if err := j.RecordAudit(context.Background(), ev); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	if err := j.WaitStored(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64((cpuTime()-c0).Microseconds())/float64(b.N), "cpu-us/event")
}
