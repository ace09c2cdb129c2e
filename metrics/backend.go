package metrics

import (
	"context"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Backend wraps b so that every call is timed. Optional interfaces of b
// stay reachable through storage.As (the wrapper is a storage.Unwrapper).
func (m *Metrics) Backend(b storage.Backend) storage.Backend {
	return &timedBackend{inner: b, m: m, kv: &timedKV{inner: b.KV(), m: m}}
}

type timedBackend struct {
	inner storage.Backend
	m     *Metrics
	kv    *timedKV
}

var _ storage.Unwrapper = (*timedBackend)(nil)

// observe records a call; not-found, version conflicts and held claims
// are answers, not failures.
func (m *Metrics) observe(op string, start time.Time, err error) {
	m.storageTime.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !storage.IsAnswer(err) {
		m.storageErrs.WithLabelValues(op).Inc()
	}
}

func (t *timedBackend) Unwrap() storage.Backend { return t.inner }

func (t *timedBackend) Commit(ctx context.Context, writes ...storage.Write) (recs []storage.Record, err error) {
	defer func(s time.Time) { t.m.observe("commit", s, err) }(time.Now())
	return t.inner.Commit(ctx, writes...)
}

func (t *timedBackend) Read(ctx context.Context, typ, id string) (rec storage.Record, err error) {
	defer func(s time.Time) { t.m.observe("read", s, err) }(time.Now())
	return t.inner.Read(ctx, typ, id)
}

func (t *timedBackend) ReadVersion(ctx context.Context, typ, id string, version int64) (rec storage.Record, err error) {
	defer func(s time.Time) { t.m.observe("read_version", s, err) }(time.Now())
	return t.inner.ReadVersion(ctx, typ, id, version)
}

func (t *timedBackend) History(ctx context.Context, req storage.HistoryRequest) (p storage.Page, err error) {
	defer func(s time.Time) { t.m.observe("history", s, err) }(time.Now())
	return t.inner.History(ctx, req)
}

func (t *timedBackend) Search(ctx context.Context, q storage.Query) (p storage.Page, err error) {
	defer func(s time.Time) { t.m.observe("search", s, err) }(time.Now())
	return t.inner.Search(ctx, q)
}

func (t *timedBackend) KV() storage.KV { return t.kv }

func (t *timedBackend) Ping(ctx context.Context) (err error) {
	defer func(s time.Time) { t.m.observe("ping", s, err) }(time.Now())
	return t.inner.Ping(ctx)
}

func (t *timedBackend) Close() error { return t.inner.Close() }

type timedKV struct {
	inner storage.KV
	m     *Metrics
}

func (k *timedKV) Put(ctx context.Context, key string, value []byte, ttl time.Duration) (err error) {
	defer func(s time.Time) { k.m.observe("kv_put", s, err) }(time.Now())
	return k.inner.Put(ctx, key, value, ttl)
}

func (k *timedKV) PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (ok bool, err error) {
	defer func(s time.Time) { k.m.observe("kv_put_if_absent", s, err) }(time.Now())
	return k.inner.PutIfAbsent(ctx, key, value, ttl)
}

func (k *timedKV) Get(ctx context.Context, key string) (v []byte, err error) {
	defer func(s time.Time) { k.m.observe("kv_get", s, err) }(time.Now())
	return k.inner.Get(ctx, key)
}

func (k *timedKV) Take(ctx context.Context, key string) (v []byte, err error) {
	defer func(s time.Time) { k.m.observe("kv_take", s, err) }(time.Now())
	return k.inner.Take(ctx, key)
}

func (k *timedKV) Delete(ctx context.Context, key string) (err error) {
	defer func(s time.Time) { k.m.observe("kv_delete", s, err) }(time.Now())
	return k.inner.Delete(ctx, key)
}

func (k *timedKV) List(ctx context.Context, prefix string) (keys []string, err error) {
	defer func(s time.Time) { k.m.observe("kv_list", s, err) }(time.Now())
	return k.inner.List(ctx, prefix)
}

func (k *timedKV) CompareAndSwap(ctx context.Context, key string, old, new []byte, ttl time.Duration) (ok bool, err error) {
	defer func(s time.Time) { k.m.observe("kv_compare_and_swap", s, err) }(time.Now())
	return k.inner.CompareAndSwap(ctx, key, old, new, ttl)
}

func (k *timedKV) CompareAndDelete(ctx context.Context, key string, old []byte) (ok bool, err error) {
	defer func(s time.Time) { k.m.observe("kv_compare_and_delete", s, err) }(time.Now())
	return k.inner.CompareAndDelete(ctx, key, old)
}
