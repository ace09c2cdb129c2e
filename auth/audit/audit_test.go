package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/auth/audit"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// countingBackend is the real SQLite backend with a count of Commits, to
// see how many events shared one.
type countingBackend struct {
	storage.Backend
	commits atomic.Int64
}

func (c *countingBackend) Commit(ctx context.Context, w ...storage.Write) ([]storage.Record, error) {
	c.commits.Add(1)
	return c.Backend.Commit(ctx, w...)
}

func open(t testing.TB) (*countingBackend, *resources.Registry) {
	t.Helper()
	be, err := sqlite.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	reg, err := resources.Load(resources.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return &countingBackend{Backend: be}, reg
}

// stored returns the client ids of the stored AuditEvents.
func stored(t *testing.T, be storage.Backend) map[string]int {
	t.Helper()
	page, err := be.Search(context.Background(), storage.Query{Types: []string{"AuditEvent"}, Count: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, r := range page.Records {
		var res struct {
			Agent []struct {
				Who struct {
					Identifier struct{ Value string } `json:"identifier"`
				} `json:"who"`
			} `json:"agent"`
		}
		if err := json.Unmarshal(r.JSON, &res); err != nil {
			t.Fatal(err)
		}
		out[res.Agent[0].Who.Identifier.Value]++
	}
	return out
}

func event(i int) auth.AuditEvent {
	return auth.AuditEvent{Interaction: "read", Action: "R", Type: "Patient", IDs: []string{"p"}, Outcome: 200, ClientID: fmt.Sprintf("client-%d", i), Source: "http://x/fhir"}
}

func TestGroupCommit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		events   int
		maxBatch int
	}{
		{"one", 1, 0},
		{"concurrent", 64, 0},
		{"batches capped at 4", 40, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be, reg := open(t)
			g := audit.NewGroupCommit(be, reg, nil, audit.WithMaxBatch(tc.maxBatch))
			var wg sync.WaitGroup
			errs := make([]error, tc.events)
			for i := range tc.events {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = g.RecordAudit(context.Background(), event(i))
				}()
			}
			wg.Wait()
			commits := be.commits.Load()
			// Everything acknowledged is stored before Close.
			got := stored(t, be)
			for i, err := range errs {
				if err != nil {
					t.Errorf("event %d: %v", i, err)
				}
				if got[fmt.Sprintf("client-%d", i)] != 1 {
					t.Errorf("event %d stored %d times", i, got[fmt.Sprintf("client-%d", i)])
				}
			}
			if len(got) != tc.events {
				t.Errorf("%d events stored, want %d", len(got), tc.events)
			}
			if commits > int64(tc.events) {
				t.Errorf("%d commits for %d events", commits, tc.events)
			}
			if tc.maxBatch > 0 && commits < int64(tc.events/tc.maxBatch) {
				t.Errorf("%d commits for %d events in batches of at most %d", commits, tc.events, tc.maxBatch)
			}
			t.Logf("%d events in %d commits", tc.events, commits)
			if err := g.Close(); err != nil {
				t.Fatal(err)
			}
			if err := g.RecordAudit(context.Background(), event(0)); !errors.Is(err, audit.ErrClosed) {
				t.Errorf("after Close: %v, want ErrClosed", err)
			}
		})
	}
}

// TestGroupCommitFailureIsReported: an event whose commit fails reports
// the failure to its caller (a closed database here), never a silent nil.
func TestGroupCommitFailureIsReported(t *testing.T) {
	be, reg := open(t)
	g := audit.NewGroupCommit(be, reg, nil)
	defer g.Close()
	if err := be.Backend.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.RecordAudit(context.Background(), event(1)); err == nil {
		t.Fatal("RecordAudit on a closed database returned nil")
	}
}

func TestGroupCommitCancelled(t *testing.T) {
	be, reg := open(t)
	g := audit.NewGroupCommit(be, reg, nil)
	defer g.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Either the event got in before the cancellation was seen, or the
	// caller is told it cannot count on it; never a hang.
	err := g.RecordAudit(ctx, event(1))
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
}

func BenchmarkAuditWrite(b *testing.B) {
	for _, mode := range []string{"sync", "group"} {
		b.Run(mode, func(b *testing.B) {
			be, reg := open(b)
			var sink auth.AuditSink = audit.New(be, reg)
			if mode == "group" {
				g := audit.NewGroupCommit(be, reg, nil)
				defer g.Close()
				sink = g
			}
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := sink.RecordAudit(context.Background(), event(1)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/float64(be.commits.Load()), "events/commit")
		})
	}
}
