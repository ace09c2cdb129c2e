package fhir

import (
	"context"
	"sync"

	"github.com/anodyne-fhir/anodyne/storage"
)

// commitMarks are KV records that an in-process caller (the importer
// posting a transaction Bundle to this server) asks to have stored in the
// next Commit of its request, so that its bookkeeping ("this Bundle is
// imported") is atomic with the Bundle's writes. They travel in the
// request's context, which only in-process callers can set.
type commitMarks struct {
	mu     sync.Mutex
	puts   []storage.KVPut
	taken  bool
	stored bool
}

type commitMarksKey struct{}

// withCommitMarks returns a context whose next Commit also stores puts,
// when the backend can (storage.KVCommitter); m.wasStored says whether it
// happened.
func withCommitMarks(ctx context.Context, puts []storage.KVPut) (context.Context, *commitMarks) {
	m := &commitMarks{puts: puts}
	return context.WithValue(ctx, commitMarksKey{}, m), m
}

// take hands the marks to one Commit at most.
func (m *commitMarks) take() []storage.KVPut {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.taken {
		return nil
	}
	m.taken = true
	return m.puts
}

func (m *commitMarks) done(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stored = err == nil
	// A refused Commit stored nothing: the marks go with the next attempt
	// (Server.commit observing again after a lost race).
	m.taken = m.stored
}

// wasStored reports whether the marks went into a successful Commit.
func (m *commitMarks) wasStored() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stored
}

// commitObserved commits writes the observers have already seen
// (s.observe), with puts, and the context's commit marks, in the same
// Commit when the backend is a storage.KVCommitter. It reports whether
// the puts were stored; when not (another backend), the caller stores them
// itself after the Commit.
func (s *Server) commitObserved(ctx context.Context, observed []storage.Write, puts ...storage.KVPut) ([]storage.Record, bool, error) {
	kc, ok := storage.As[storage.KVCommitter](s.backend)
	if !ok {
		recs, err := s.backend.Commit(ctx, observed...)
		return recs, false, err
	}
	m, _ := ctx.Value(commitMarksKey{}).(*commitMarks)
	if m != nil {
		if marks := m.take(); len(marks) > 0 {
			puts = append(append([]storage.KVPut(nil), puts...), marks...)
			recs, err := kc.CommitWithKV(ctx, puts, observed...)
			m.done(err)
			return recs, err == nil, err
		}
	}
	if len(puts) == 0 {
		recs, err := s.backend.Commit(ctx, observed...)
		return recs, false, err
	}
	recs, err := kc.CommitWithKV(ctx, puts, observed...)
	return recs, err == nil, err
}
