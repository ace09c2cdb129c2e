package subscription

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/conformance/fhirpath"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// active is a Subscription ready to match: its compiled criteria and the
// read filter its owner was granted on the criteria's type.
type active struct {
	sub      *sub
	criteria storage.Expr         // nil: every resource of the type
	filter   storage.Expr         // nil: unrestricted
	denied   bool                 // the owner may not search the type at all
	path     *fhirpath.Expression // a topic's condition on the written resource
}

// matches reports whether a written version is an event for a: the
// criteria and the owner's access both hold on its own index entries.
func (a *active) matches(log *slog.Logger, w storage.Write, res func() map[string]any) bool {
	if a.denied {
		return false
	}
	for _, e := range []storage.Expr{a.criteria, a.filter} {
		if e == nil {
			continue
		}
		ok, err := storage.Matches(e, w.ID, w.Index)
		if err != nil {
			// Compiled criteria are probed at write time; this is a bug,
			// and failing the caller's write over it would be worse.
			log.Error("subscription: matching failed", "subscription", a.sub.ID, "resource", w.Type+"/"+w.ID, "err", err)
			return false
		}
		if !ok {
			return false
		}
	}
	if a.path != nil {
		r := res()
		if r == nil {
			return false
		}
		c, err := a.path.Evaluate(r)
		if err != nil {
			log.Warn("subscription: topic condition failed", "subscription", a.sub.ID, "resource", w.Type+"/"+w.ID, "err", err)
			return false
		}
		return truthy(c)
	}
	return true
}

// pendingGrace is how long a change observed in this process outranks
// what the store says: its Commit may not have returned yet when a reload
// reads, and a Commit that failed is forgotten after it.
const pendingGrace = 15 * time.Second

type pending struct {
	a       *active // nil: deleted
	version int64
	at      time.Time
}

// registry is the in-memory set of Subscriptions: the last load from the
// store overlaid with the changes this process observed since.
type registry struct {
	s *Service

	lastSeq int64 // Seq of the newest Subscription version at the last load (Run's goroutine only)

	mu      sync.RWMutex
	stored  map[string]*active
	pending map[string]pending
	byType  map[string][]*active  // matching Subscriptions (requested, active or error, not ended)
	index   map[string]*typeIndex // byType, filed by the terms their criteria require
}

func newRegistry(s *Service) *registry {
	return &registry{s: s, stored: map[string]*active{}, pending: map[string]pending{}, byType: map[string][]*active{}, index: map[string]*typeIndex{}}
}

// indexes is the candidate index of every type (replaced, never changed).
func (r *registry) indexes() map[string]*typeIndex {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.index
}

func (r *registry) snapshot() map[string][]*active {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byType
}

// get is the Subscription id as this process knows it (nil: none).
func (r *registry) get(id string) *active {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if p, ok := r.pending[id]; ok {
		return p.a
	}
	return r.stored[id]
}

// countOwned is how many Subscriptions of client are not off, except id.
func (r *registry) countOwned(client, except string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	seen := map[string]bool{}
	count := func(id string, a *active) {
		seen[id] = true
		if a != nil && id != except && a.sub.Owner != nil && a.sub.Owner.Client == client && a.sub.Status != statusOff {
			n++
		}
	}
	for id, p := range r.pending {
		count(id, p.a)
	}
	for id, a := range r.stored {
		if !seen[id] {
			count(id, a)
		}
	}
	return n
}

// observed records a change this process is committing (a == nil: a delete).
func (r *registry) observed(id string, version int64, a *active) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending[id] = pending{a: a, version: version, at: time.Now()}
	r.rebuild()
}

// replace installs a fresh load, keeping observed changes the load does
// not include yet.
func (r *registry) replace(stored map[string]*active) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stored = stored
	for id, p := range r.pending {
		cur := stored[id]
		switch {
		case time.Since(p.at) > pendingGrace,
			cur != nil && cur.sub.Version >= p.version,
			p.a == nil && cur == nil:
			delete(r.pending, id)
		}
	}
	r.rebuild()
}

func (r *registry) rebuild() {
	now := time.Now()
	by := map[string][]*active{}
	add := func(a *active) {
		// requested: a topic-based Subscription whose handshake is queued;
		// its events queue behind it.
		if a == nil || (a.sub.Status != statusActive && a.sub.Status != statusError && a.sub.Status != statusRequested) {
			return
		}
		if !a.sub.End.IsZero() && !now.Before(a.sub.End) {
			return
		}
		by[a.sub.Type] = append(by[a.sub.Type], a)
	}
	for id, a := range r.stored {
		if _, ok := r.pending[id]; !ok {
			add(a)
		}
	}
	for _, p := range r.pending {
		add(p.a)
	}
	r.byType = by
	ix := make(map[string]*typeIndex, len(by))
	for typ, list := range by {
		ix[typ] = newTypeIndex(list)
	}
	r.index = ix
}

// newest is the Seq of the newest Subscription version in the store.
func (r *registry) newest(ctx context.Context) (int64, error) {
	page, err := r.s.cfg.Backend.History(ctx, storage.HistoryRequest{Type: "Subscription", Count: 1})
	if err != nil {
		return 0, fmt.Errorf("reading Subscription history: %w", err)
	}
	if len(page.Records) == 0 {
		return 0, nil
	}
	return page.Records[0].Seq, nil
}

// changed reloads when a Subscription version newer than the last load
// exists (written by any process).
func (r *registry) changed(ctx context.Context) error {
	seq, err := r.newest(ctx)
	if err != nil || seq == r.lastSeq {
		return err
	}
	return r.load(ctx)
}

// load reads every Subscription from the store.
func (r *registry) load(ctx context.Context) error {
	seq, err := r.newest(ctx)
	if err != nil {
		return err
	}
	out := map[string]*active{}
	q := storage.Query{Types: []string{"Subscription"}, Count: 500}
	for {
		page, err := r.s.cfg.Backend.Search(ctx, q)
		if err != nil {
			return fmt.Errorf("loading Subscriptions: %w", err)
		}
		for _, rec := range page.Records {
			a, err := r.s.activate(ctx, rec)
			if err != nil {
				r.s.log.Warn("subscription: cannot be used", "subscription", rec.ID, "err", err)
				continue
			}
			out[rec.ID] = a
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	r.replace(out)
	r.lastSeq = seq
	return nil
}

// activate parses a stored Subscription and compiles what matching needs.
func (s *Service) activate(ctx context.Context, rec storage.Record) (*active, error) {
	res, err := decode(rec.JSON)
	if err != nil {
		return nil, err
	}
	sb, err := parseSub(res, rec.VersionID)
	if err != nil {
		return nil, err
	}
	return s.compile(ctx, sb)
}

func (s *Service) compile(ctx context.Context, sb *sub) (*active, error) {
	srv, err := s.server()
	if err != nil {
		return nil, err
	}
	var a *active
	if sb.Topic != "" {
		if a, err = s.compileTopic(ctx, srv, sb); err != nil {
			return nil, err
		}
	} else {
		typ, expr, err := srv.CompileCriteria(ctx, sb.Criteria)
		if err != nil {
			return nil, err
		}
		sb.Type = typ
		a = &active{sub: sb, criteria: expr}
	}
	typ := sb.Type
	d, err := s.ownerDecision(ctx, sb.Owner, typ)
	if err != nil {
		return nil, err
	}
	a.denied, a.filter = !d.Allowed, d.Filter
	return a, nil
}

// compileTopic compiles a backport Subscription: the topic's criteria
// and condition, ANDed with each filter (a search on the same type).
func (s *Service) compileTopic(ctx context.Context, srv *fhir.Server, sb *sub) (*active, error) {
	t := s.topics[sb.Topic]
	if t == nil {
		return nil, &fhir.CriteriaError{Why: fmt.Sprintf("%s is not a topic of this server", sb.Topic)}
	}
	sb.Type = t.Resource
	var exprs []storage.Expr
	for _, c := range append([]string{t.Criteria}, sb.Filters...) {
		typ, e, err := srv.CompileCriteria(ctx, c)
		if err != nil {
			return nil, err
		}
		if typ != t.Resource {
			return nil, &fhir.CriteriaError{Why: fmt.Sprintf("filter %q is not on %s, the topic's resource", c, t.Resource)}
		}
		if e != nil {
			exprs = append(exprs, e)
		}
	}
	a := &active{sub: sb, path: t.path}
	switch len(exprs) {
	case 0:
	case 1:
		a.criteria = exprs[0]
	default:
		a.criteria = storage.And{Exprs: exprs}
	}
	return a, nil
}

// ownerDecision asks the decision point what the owner may search on typ.
// Without an authorizer, or for a Subscription written without a
// Principal (authorization off, an operator's import), nothing is
// restricted.
func (s *Service) ownerDecision(ctx context.Context, o *owner, typ string) (auth.Decision, error) {
	if s.cfg.Authorizer == nil || o == nil {
		return auth.Decision{Allowed: true}, nil
	}
	d, err := s.cfg.Authorizer.Decide(auth.WithPrincipal(ctx, o.principal()), fhir.ActionSearch, typ)
	if err != nil {
		return auth.Decision{}, fmt.Errorf("authorizing the owner of a Subscription: %w", err)
	}
	return d, nil
}

// lookup returns a Subscription for delivery as the store has it now
// (nil: deleted or never stored), never the registry's view: a change
// observed in this process whose Commit then failed must not be served,
// and a deletion by another process stops delivery at once.
func (s *Service) lookup(ctx context.Context, id string) (*sub, error) {
	rec, err := s.cfg.Backend.Read(ctx, "Subscription", id)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && rec.Deleted) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading Subscription/%s: %w", id, err)
	}
	res, err := decode(rec.JSON)
	if err != nil {
		return nil, err
	}
	return parseSub(res, rec.VersionID)
}
