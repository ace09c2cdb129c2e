package fhir_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// turnObserver serializes every Patient change on one key and, for a
// Patient named first, stops after taking it until proceed is closed;
// for one named second it reports when it is about to take it, and
// whether first was stored when it got it.
type turnObserver struct {
	entered, trying, proceed chan struct{}
	sawFirst                 atomic.Int32 // 1 stored, -1 not stored when second got the key
}

func (o *turnObserver) ObserveCommit(ctx context.Context, cs *fhir.CommitSet) error {
	for i := 0; i < cs.Len(); i++ {
		w := cs.Write(i)
		if w.Type != "Patient" || cs.Derived(i) {
			continue
		}
		if w.ID == "second" {
			close(o.trying)
		}
		if err := cs.Serialize(ctx, "test/turns"); err != nil {
			return err
		}
		switch w.ID {
		case "first":
			close(o.entered)
			<-o.proceed
		case "second":
			_, err := cs.Backend().Read(ctx, "Patient", "first")
			switch {
			case err == nil:
				o.sawFirst.Store(1)
			case errors.Is(err, storage.ErrNotFound):
				o.sawFirst.Store(-1)
			default:
				return err
			}
		}
	}
	return nil
}

// TestSerializeAcrossServers: two servers on one store (two processes'
// worth: each its own fhir.Server, backend handle and locks) take turns on
// a Serialize key. While the first holds it, the second waits; when it
// gets it, the first's Commit is in the store. With SerializeInProcess
// the second does not wait (the counter-check that the test can fail).
func TestSerializeAcrossServers(t *testing.T) {
	stores := env.SharedStores()
	for _, st := range stores {
		for _, inProcess := range []bool{false, true} {
			name := st.Name
			if inProcess {
				name += ", in-process locks only"
			}
			t.Run(name, func(t *testing.T) {
				ab := st.Open(t)
				a, b := ab[0], ab[1]
				o := &turnObserver{entered: make(chan struct{}), trying: make(chan struct{}), proceed: make(chan struct{})}
				mod := func(cfg *fhir.Config) {
					cfg.Observers = []fhir.CommitObserver{o}
					cfg.SerializeInProcess = inProcess
				}
				ca, cb := newServer(t, a, mod), newServer(t, b, mod)
				done := make(chan response, 2)
				go func() { done <- ca.do("PUT", "/Patient/first", `{"resourceType":"Patient","id":"first"}`) }()
				<-o.entered
				go func() { done <- cb.do("PUT", "/Patient/second", `{"resourceType":"Patient","id":"second"}`) }()
				<-o.trying
				if inProcess {
					// The second is not held back: it answers while the first waits.
					if r := <-done; r.status != 201 || !strings.Contains(string(r.body), `"second"`) {
						t.Errorf("second: %d %s", r.status, r.body)
					}
					close(o.proceed)
					if r := <-done; r.status != 201 {
						t.Errorf("first: %d %s", r.status, r.body)
					}
					if o.sawFirst.Load() != -1 {
						t.Errorf("with in-process locks the second saw the first stored (%d): the check cannot tell", o.sawFirst.Load())
					}
					return
				}
				close(o.proceed)
				for range 2 {
					if r := <-done; r.status != 201 {
						t.Errorf("%d %s", r.status, r.body)
					}
				}
				if got := o.sawFirst.Load(); got != 1 {
					t.Errorf("the second server observed before the first's Commit was stored (%d)", got)
				}
				// The leases are released: the key is free for the next one.
				if keys, err := a.KV().List(context.Background(), "fhir/serialize/"); err != nil || len(keys) != 0 {
					t.Errorf("serialization leases left: %v (%v)", keys, err)
				}
			})
		}
	}
}
