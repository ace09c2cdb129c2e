// Package research is Anodyne's research access: it plugs the
// de-identifier (package deid) into the FHIR layer's one output hook
// (fhir.OutputFilter) for callers whose Principal names a research
// project, keeps each project's pseudonym key in the store, answers
// requests that speak pseudonyms, and refuses searches on what the rules
// hide, so no answer depends on a hidden value.
//
// It must not know how resources are stored or routed: it sees resources
// only as they leave through the hook and requests only as parameters.
package research

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/deid"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
)

// KV namespaces. Keys are never logged.
const (
	keyPrefix       = "research/key/"       // + project: 32 random bytes
	pseudonymPrefix = "research/pseudonym/" // + project + "/" + Type/pseudonym: Type/id
	viewPrefix      = "research:"           // + project: View.Name of a bulk job
)

// maxRemembered bounds the in-process memory of pseudonyms already
// recorded, per filter; beyond it the memory starts again (a record is
// then rewritten with the same value, which costs a write, nothing else).
const maxRemembered = 1 << 18

// Filter is the fhir.OutputFilter of research access.
type Filter struct {
	deid     *deid.Deidentifier
	kv       storage.KV
	batch    storage.KVCommitter // nil when the backend has none
	registry *resources.Registry
	log      *slog.Logger

	mu   sync.Mutex
	keys map[string][]byte // project -> key, read once from the store
	seen map[string]bool   // project + "\x00" + Type/pseudonym already recorded

	cellsMu sync.Mutex // serializes $stats releases (research/stats.go)
}

var _ fhir.OutputFilter = (*Filter)(nil)

// New returns the research output filter over d, keeping keys and
// pseudonyms in the backend's KV (the pseudonyms of a whole response in
// one Commit where the backend is a storage.KVCommitter); reg tells
// parameter types for search checks.
func New(d *deid.Deidentifier, be storage.Backend, reg *resources.Registry, log *slog.Logger) *Filter {
	if log == nil {
		log = slog.Default()
	}
	f := &Filter{deid: d, kv: be.KV(), registry: reg, log: log, keys: map[string][]byte{}, seen: map[string]bool{}}
	if c, ok := storage.As[storage.KVCommitter](be); ok {
		f.batch = c
	}
	return f
}

// For returns the view of a research caller, nil for everyone else.
func (f *Filter) For(ctx context.Context) (fhir.View, error) {
	p := auth.FromContext(ctx)
	if p == nil || p.ResearchProject == "" {
		return nil, nil
	}
	// Registrations and trusted issuers check the name; a Principal made
	// any other way must not reach the project's records with a bad one.
	if err := auth.ValidResearchProject(p.ResearchProject); err != nil {
		return nil, fhir.OperationError(403, "research access: %v", err)
	}
	v, err := f.view(ctx, p.ResearchProject)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// Named returns the view a bulk job recorded.
func (f *Filter) Named(ctx context.Context, name string) (fhir.View, error) {
	project, ok := cutPrefix(name, viewPrefix)
	if !ok || project == "" {
		return nil, fmt.Errorf("research: unknown view %q", name)
	}
	v, err := f.view(ctx, project)
	if err != nil {
		return nil, err
	}
	return v, nil
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return s, false
}

func (f *Filter) view(ctx context.Context, project string) (*view, error) {
	key, err := f.projectKey(ctx, project)
	if err != nil {
		return nil, err
	}
	return &view{f: f, project: project, key: key}, nil
}

// projectKey reads (creating on first use) the project's pseudonym key.
// Creation is PutIfAbsent, so replicas racing on a new project agree.
func (f *Filter) projectKey(ctx context.Context, project string) ([]byte, error) {
	f.mu.Lock()
	k, ok := f.keys[project]
	f.mu.Unlock()
	if ok {
		return k, nil
	}
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("research: drawing a project key: %w", err)
	}
	if _, err := f.kv.PutIfAbsent(ctx, keyPrefix+project, fresh, 0); err != nil {
		return nil, fmt.Errorf("research: storing the key of project %s: %w", project, err)
	}
	k, err := f.kv.Get(ctx, keyPrefix+project)
	if err != nil {
		return nil, fmt.Errorf("research: reading the key of project %s: %w", project, err)
	}
	if len(k) != 32 {
		return nil, fmt.Errorf("research: the stored key of project %s is damaged (%d bytes)", project, len(k))
	}
	f.mu.Lock()
	f.keys[project] = k
	f.mu.Unlock()
	return k, nil
}

// remember records pseudonyms the caller has been shown, so that a later
// request naming one can be answered; under a deferred context (Defer) it
// only collects them.
func (f *Filter) remember(ctx context.Context, project string, pseudonyms map[string]string) error {
	p, _ := ctx.Value(pendingKey{}).(*pending)
	for ps, real := range pseudonyms {
		mk := project + "\x00" + ps
		f.mu.Lock()
		known := f.seen[mk]
		f.mu.Unlock()
		if known {
			continue
		}
		if p != nil {
			p.mu.Lock()
			p.puts[pseudonymPrefix+project+"/"+ps] = pendingPut{mk, real}
			p.mu.Unlock()
			continue
		}
		if _, err := f.kv.PutIfAbsent(ctx, pseudonymPrefix+project+"/"+ps, []byte(real), 0); err != nil {
			return fmt.Errorf("research: recording a pseudonym: %w", err)
		}
		f.markSeen(mk)
	}
	return nil
}

func (f *Filter) markSeen(mk string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) >= maxRemembered {
		clear(f.seen)
	}
	f.seen[mk] = true
}

type pendingKey struct{}

type pendingPut struct{ seenKey, real string }

// pending collects the pseudonym records of one response.
type pending struct {
	mu   sync.Mutex
	puts map[string]pendingPut // KV key -> record
}

// flush stores the collected records: in one Commit where the backend
// can, one put each otherwise. A pseudonym's record never changes (the
// pseudonym is a keyed hash of what it stands for), so a plain put
// rewriting an existing one is harmless.
func (f *Filter) flush(ctx context.Context, p *pending) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.puts) == 0 {
		return nil
	}
	if f.batch != nil {
		puts := make([]storage.KVPut, 0, len(p.puts))
		for k, r := range p.puts {
			puts = append(puts, storage.KVPut{Key: k, Value: []byte(r.real)})
		}
		if _, err := f.batch.CommitWithKV(ctx, puts); err != nil {
			return fmt.Errorf("research: recording %d pseudonyms: %w", len(puts), err)
		}
	} else {
		for k, r := range p.puts {
			if _, err := f.kv.PutIfAbsent(ctx, k, []byte(r.real), 0); err != nil {
				return fmt.Errorf("research: recording a pseudonym: %w", err)
			}
		}
	}
	for _, r := range p.puts {
		f.markSeen(r.seenKey)
	}
	clear(p.puts)
	return nil
}

// resolve maps Type/pseudonym to the stored id; ok false when the
// project never saw it (a real id, a guess, another project's pseudonym).
func (f *Filter) resolve(ctx context.Context, project, typ, pseudonym string) (string, bool, error) {
	raw, err := f.kv.Get(ctx, pseudonymPrefix+project+"/"+typ+"/"+pseudonym)
	if errors.Is(err, storage.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("research: resolving a pseudonym: %w", err)
	}
	rt, id, ok := cut(string(raw), '/')
	if !ok || rt != typ {
		return "", false, nil
	}
	return id, true, nil
}

func cut(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// view is one project's fhir.View.
type view struct {
	f       *Filter
	project string
	key     []byte
}

func (v *view) Name() string { return viewPrefix + v.project }

func (v *view) Resource(ctx context.Context, res map[string]any) (map[string]any, error) {
	out, result, err := v.f.deid.Apply(res, v.key)
	if err != nil {
		return nil, err
	}
	if err := v.f.remember(ctx, v.project, result.Pseudonyms); err != nil {
		return nil, err
	}
	return out, nil
}

var _ fhir.DeferringView = (*view)(nil)

// Defer collects the pseudonyms of a response's resources so that they
// are recorded in one write before it is sent.
func (v *view) Defer(ctx context.Context) (context.Context, func(context.Context) error) {
	p := &pending{puts: map[string]pendingPut{}}
	return context.WithValue(ctx, pendingKey{}, p), func(ctx context.Context) error { return v.f.flush(ctx, p) }
}

func (v *view) ID(ctx context.Context, typ, id string) (string, bool, error) {
	return v.f.resolve(ctx, v.project, typ, id)
}
