package tracing

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Backend wraps b so that every storage call is a child span of the
// caller's. Optional interfaces stay reachable through storage.As.
func (t *Tracing) Backend(b storage.Backend) storage.Backend {
	return &tracedBackend{inner: b, t: t, kv: &tracedKV{inner: b.KV(), t: t}}
}

type tracedBackend struct {
	inner storage.Backend
	t     *Tracing
	kv    *tracedKV
}

var _ storage.Unwrapper = (*tracedBackend)(nil)

func (b *tracedBackend) Unwrap() storage.Backend { return b.inner }

func (b *tracedBackend) Commit(ctx context.Context, writes ...storage.Write) (recs []storage.Record, err error) {
	ctx, end := b.t.span(ctx, "commit", attribute.Int("storage.writes", len(writes)))
	defer func() { end(err) }()
	return b.inner.Commit(ctx, writes...)
}

func (b *tracedBackend) Read(ctx context.Context, typ, id string) (rec storage.Record, err error) {
	ctx, end := b.t.span(ctx, "read", attribute.String("fhir.resource_type", typ))
	defer func() { end(ignoreAnswers(err)) }()
	return b.inner.Read(ctx, typ, id)
}

func (b *tracedBackend) ReadVersion(ctx context.Context, typ, id string, version int64) (rec storage.Record, err error) {
	ctx, end := b.t.span(ctx, "read_version", attribute.String("fhir.resource_type", typ))
	defer func() { end(ignoreAnswers(err)) }()
	return b.inner.ReadVersion(ctx, typ, id, version)
}

func (b *tracedBackend) History(ctx context.Context, req storage.HistoryRequest) (p storage.Page, err error) {
	ctx, end := b.t.span(ctx, "history", attribute.String("fhir.resource_type", req.Type))
	defer func() { end(err) }()
	return b.inner.History(ctx, req)
}

func (b *tracedBackend) Search(ctx context.Context, q storage.Query) (p storage.Page, err error) {
	// The types and page size, never the filter: its values may be
	// identifiers of patients.
	ctx, end := b.t.span(ctx, "search", attribute.StringSlice("fhir.resource_types", q.Types), attribute.Int("storage.count", q.Count))
	defer func() { end(err) }()
	return b.inner.Search(ctx, q)
}

func (b *tracedBackend) KV() storage.KV { return b.kv }

func (b *tracedBackend) Ping(ctx context.Context) (err error) {
	ctx, end := b.t.span(ctx, "ping")
	defer func() { end(err) }()
	return b.inner.Ping(ctx)
}

func (b *tracedBackend) Close() error { return b.inner.Close() }

// ignoreAnswers keeps not-found and conflicts from marking spans failed.
func ignoreAnswers(err error) error {
	if err == nil || storage.IsAnswer(err) {
		return nil
	}
	return err
}

type tracedKV struct {
	inner storage.KV
	t     *Tracing
}

func (k *tracedKV) Put(ctx context.Context, key string, value []byte, ttl time.Duration) (err error) {
	ctx, end := k.t.span(ctx, "kv_put")
	defer func() { end(err) }()
	return k.inner.Put(ctx, key, value, ttl)
}

func (k *tracedKV) PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (ok bool, err error) {
	ctx, end := k.t.span(ctx, "kv_put_if_absent")
	defer func() { end(err) }()
	return k.inner.PutIfAbsent(ctx, key, value, ttl)
}

func (k *tracedKV) Get(ctx context.Context, key string) (v []byte, err error) {
	ctx, end := k.t.span(ctx, "kv_get")
	defer func() { end(ignoreAnswers(err)) }()
	return k.inner.Get(ctx, key)
}

func (k *tracedKV) Take(ctx context.Context, key string) (v []byte, err error) {
	ctx, end := k.t.span(ctx, "kv_take")
	defer func() { end(ignoreAnswers(err)) }()
	return k.inner.Take(ctx, key)
}

func (k *tracedKV) Delete(ctx context.Context, key string) (err error) {
	ctx, end := k.t.span(ctx, "kv_delete")
	defer func() { end(ignoreAnswers(err)) }()
	return k.inner.Delete(ctx, key)
}

func (k *tracedKV) List(ctx context.Context, prefix string) (keys []string, err error) {
	ctx, end := k.t.span(ctx, "kv_list")
	defer func() { end(err) }()
	return k.inner.List(ctx, prefix)
}

func (k *tracedKV) CompareAndSwap(ctx context.Context, key string, old, new []byte, ttl time.Duration) (ok bool, err error) {
	ctx, end := k.t.span(ctx, "kv_compare_and_swap")
	defer func() { end(err) }()
	return k.inner.CompareAndSwap(ctx, key, old, new, ttl)
}

func (k *tracedKV) CompareAndDelete(ctx context.Context, key string, old []byte) (ok bool, err error) {
	ctx, end := k.t.span(ctx, "kv_compare_and_delete")
	defer func() { end(err) }()
	return k.inner.CompareAndDelete(ctx, key, old)
}
