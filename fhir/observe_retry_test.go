package fhir_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// countObserver keeps one derived Basic "count-<patient>" per patient
// whose code.text is the number of Observations written for the patient:
// a derived resource every write for the patient rewrites, as opioid and
// remote-monitoring alerts are. gate, when set, holds the first two calls
// until both have read the count, so that they race.
type countObserver struct {
	calls atomic.Int64
	gate  *sync.WaitGroup
}

func (o *countObserver) ObserveCommit(ctx context.Context, cs *fhir.CommitSet) error {
	for i := 0; i < cs.Len(); i++ {
		w := cs.Write(i)
		if cs.Derived(i) || w.Type != "Observation" || w.Deleted {
			continue
		}
		call := o.calls.Add(1)
		var res struct {
			Subject struct{ Reference string } `json:"subject"`
		}
		if err := json.Unmarshal(w.JSON, &res); err != nil {
			return err
		}
		id := "count-" + strings.TrimPrefix(res.Subject.Reference, "Patient/")
		var version, n int64
		rec, err := cs.Backend().Read(ctx, "Basic", id)
		switch {
		case err == nil:
			var cur struct {
				Code struct{ Text string } `json:"code"`
			}
			if err := json.Unmarshal(rec.JSON, &cur); err != nil {
				return err
			}
			version = rec.VersionID
			n, _ = strconv.ParseInt(cur.Code.Text, 10, 64)
		case !errors.Is(err, storage.ErrNotFound):
			return err
		}
		if o.gate != nil && call <= 2 {
			o.gate.Done()
			o.gate.Wait()
		}
		if err := cs.Put(map[string]any{"resourceType": "Basic", "id": id, "code": map[string]any{"text": strconv.FormatInt(n+1, 10)}}, version); err != nil {
			return err
		}
	}
	return nil
}

// TestDerivedConflictRetried: concurrent writes for one patient whose
// observers rewrite the same derived resource all succeed, each counted
// once (the observers ran again over the winner's state instead of the
// loser answering 409); a write whose own compare-and-set fails still
// gets its 409.
func TestDerivedConflictRetried(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			b := be.open(t)
			obs := &countObserver{}
			c, _ := startServer(t, b, func(cfg *fhir.Config) { cfg.Observers = []fhir.CommitObserver{obs} })
			c.do("PUT", "/Patient/p", `{"resourceType":"Patient","id":"p"}`).expect(t, 201)
			count := func() int {
				rec, err := b.Read(context.Background(), "Basic", "count-p")
				if errors.Is(err, storage.ErrNotFound) {
					return 0
				}
				if err != nil {
					t.Fatal(err)
				}
				var cur struct {
					Code struct{ Text string } `json:"code"`
				}
				json.Unmarshal(rec.JSON, &cur)
				n, _ := strconv.Atoi(cur.Code.Text)
				return n
			}
			obsBody := func(i int) string {
				return fmt.Sprintf(`{"resourceType":"Observation","status":"final","code":{"text":"reading %d"},"subject":{"reference":"Patient/p"}}`, i)
			}
			writeAll := func(n, from int, write func(i int) response) {
				var wg sync.WaitGroup
				statuses := make([]int, n)
				for i := 0; i < n; i++ {
					wg.Add(1)
					go func(i int) {
						defer wg.Done()
						r := write(from + i)
						statuses[i] = r.status
						if r.status != http.StatusCreated {
							t.Logf("write %d: %s", from+i, r.body)
						}
					}(i)
				}
				wg.Wait()
				for i, s := range statuses {
					if s != http.StatusCreated {
						t.Errorf("write %d: status %d, want 201", from+i, s)
					}
				}
			}

			// Two creates that certainly race: both observers read the
			// count before either commits, so one Commit must be refused.
			gate := &sync.WaitGroup{}
			gate.Add(2)
			obs.gate = gate
			writeAll(2, 0, func(i int) response { return c.do("POST", "/Observation", obsBody(i)) })
			obs.gate = nil
			if got := count(); got != 2 {
				t.Fatalf("count after two racing creates: %d, want 2", got)
			}
			if calls := obs.calls.Load(); calls < 3 {
				t.Fatalf("observer ran %d times for two racing creates: the loser was not observed again", calls)
			}

			// A burst of creates, updates and a transaction for one patient.
			const burst = 6
			writeAll(burst, 2, func(i int) response { return c.do("POST", "/Observation", obsBody(i)) })
			writeAll(burst, 2+burst, func(i int) response {
				return c.do("PUT", fmt.Sprintf("/Observation/o%d", i), strings.Replace(obsBody(i), `{"resourceType":"Observation"`, fmt.Sprintf(`{"resourceType":"Observation","id":"o%d"`, i), 1))
			})
			if got, want := count(), 2+2*burst; got != want {
				t.Errorf("count after the burst: %d, want %d (a derived write was lost or doubled)", got, want)
			}

			// The caller's own conflict is not retried away: two updates
			// of one version race, the loser's compare-and-set fails, and
			// its Commit is not observed again.
			obs.calls.Store(0)
			gate = &sync.WaitGroup{}
			gate.Add(2)
			obs.gate = gate
			var wg sync.WaitGroup
			statuses := make([]int, 2)
			for i := range statuses {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					statuses[i] = c.do("PUT", "/Observation/o8", strings.Replace(obsBody(100+i), `{"resourceType":"Observation"`, `{"resourceType":"Observation","id":"o8"`, 1), `If-Match: W/"1"`).status
				}(i)
			}
			wg.Wait()
			obs.gate = nil
			if ok, lost := min(statuses[0], statuses[1]), max(statuses[0], statuses[1]); ok != 200 || (lost != 409 && lost != 412) {
				t.Errorf("two updates of version 1: statuses %v, want one 200 and one 409 or 412", statuses)
			}
			if calls := obs.calls.Load(); calls != 2 {
				t.Errorf("observer ran %d times for two racing updates of one version, want 2: a primary conflict was retried", calls)
			}
			if got, want := count(), 3+2*burst; got != want {
				t.Errorf("count after the racing updates: %d, want %d", got, want)
			}
		})
	}
}
