package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// kv is the storage.KV of a Backend. Expiry is evaluated against the Go
// clock passed as a parameter, so that every query agrees on "now".
type kv struct{ b *Backend }

// KV implements storage.Backend.
func (b *Backend) KV() storage.KV { return kv{b} }

func expiry(ttl time.Duration) any {
	if ttl <= 0 {
		return nil
	}
	return time.Now().Add(ttl).UnixMilli()
}

// kvUpsert stores one KV record (Put, and puts inside a Commit).
const kvUpsert = `INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at`

const live = "(expires_at IS NULL OR expires_at > ?)"

func (k kv) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if value == nil {
		value = []byte{}
	}
	_, err := k.b.w.ExecContext(ctx, kvUpsert, key, value, expiry(ttl))
	if err != nil {
		return fmt.Errorf("sqlite: kv put %q: %w", key, classify(err))
	}
	return nil
}

func (k kv) PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if value == nil {
		value = []byte{}
	}
	// One statement on the single writer connection: the conflict clause
	// replaces only an expired record, so two callers cannot both win.
	res, err := k.b.w.ExecContext(ctx, `INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
		WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?`, key, value, expiry(ttl), time.Now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("sqlite: kv put-if-absent %q: %w", key, classify(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sqlite: kv put-if-absent %q: %w", key, err)
	}
	return n == 1, nil
}

func (k kv) Get(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	var exp sql.NullInt64
	now := time.Now().UnixMilli()
	err := k.b.r.QueryRowContext(ctx, `SELECT value, expires_at FROM kv WHERE key = ?`, key).Scan(&v, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite: kv get %q: %w", key, storage.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: kv get %q: %w", key, err)
	}
	if exp.Valid && exp.Int64 <= now {
		// The record is absent to the caller whatever happens here; the
		// delete only reclaims space. Its condition spares a record that
		// a concurrent Put has just renewed.
		if _, err := k.b.w.ExecContext(ctx, `DELETE FROM kv WHERE key = ? AND expires_at <= ?`, key, now); err != nil {
			k.b.log.WarnContext(ctx, "sqlite: kv: deleting an expired record", "key", key, "err", err)
		}
		return nil, fmt.Errorf("sqlite: kv get %q: expired: %w", key, storage.ErrNotFound)
	}
	return v, nil
}

// sweepBatch bounds one sweep transaction, so that a large backlog of
// expired records never holds the single writer for long.
const sweepBatch = 500

// SweepExpiredKV deletes every expired KV record and reports how many.
// Open runs it periodically (WithKVSweepInterval).
func (b *Backend) SweepExpiredKV(ctx context.Context) (int64, error) {
	var total int64
	now := time.Now().UnixMilli()
	for {
		res, err := b.w.ExecContext(ctx, `DELETE FROM kv WHERE rowid IN
			(SELECT rowid FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)`, now, sweepBatch)
		if err != nil {
			return total, fmt.Errorf("sqlite: kv sweep: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("sqlite: kv sweep: %w", err)
		}
		total += n
		if n < sweepBatch {
			return total, nil
		}
	}
}

func (b *Backend) sweepLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := b.SweepExpiredKV(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			b.log.WarnContext(ctx, "sqlite: kv sweep failed", "err", err)
		case n > 0:
			b.log.DebugContext(ctx, "sqlite: kv sweep", "deleted", n)
		}
	}
}

func (k kv) Take(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	var exp sql.NullInt64
	now := time.Now().UnixMilli()
	// DELETE ... RETURNING reads and removes in one statement; an expired
	// record is removed too but reported absent.
	err := k.b.w.QueryRowContext(ctx, `DELETE FROM kv WHERE key = ? RETURNING value, expires_at`, key).Scan(&v, &exp)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && exp.Valid && exp.Int64 <= now) {
		return nil, fmt.Errorf("sqlite: kv take %q: %w", key, storage.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: kv take %q: %w", key, err)
	}
	return v, nil
}

func (k kv) Delete(ctx context.Context, key string) error {
	if _, err := k.b.w.ExecContext(ctx, `DELETE FROM kv WHERE key = ?`, key); err != nil {
		return fmt.Errorf("sqlite: kv delete %q: %w", key, err)
	}
	return nil
}

func (k kv) List(ctx context.Context, prefix string) ([]string, error) {
	rows, err := k.b.r.QueryContext(ctx, `SELECT key FROM kv WHERE key GLOB ? AND `+live+` ORDER BY key`,
		globEscape(prefix)+"*", time.Now().UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("sqlite: kv list %q: %w", prefix, err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var key string
		if err := rows.Scan(&key); err != nil {
			return nil, fmt.Errorf("sqlite: kv list %q: %w", prefix, err)
		}
		keys = append(keys, key)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: kv list %q: %w", prefix, err)
	}
	return keys, nil
}

// CompareAndSwap is one conditional UPDATE on the single writer
// connection, so that no other statement runs between compare and swap.
func (k kv) CompareAndSwap(ctx context.Context, key string, old, new []byte, ttl time.Duration) (bool, error) {
	if old == nil {
		old = []byte{}
	}
	if new == nil {
		new = []byte{}
	}
	res, err := k.b.w.ExecContext(ctx, `UPDATE kv SET value = ?, expires_at = ? WHERE key = ? AND value = ? AND `+live,
		new, expiry(ttl), key, old, time.Now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("sqlite: kv compare-and-swap %q: %w", key, classify(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sqlite: kv compare-and-swap %q: %w", key, err)
	}
	return n == 1, nil
}

// CompareAndDelete is one conditional DELETE, atomic as CompareAndSwap.
func (k kv) CompareAndDelete(ctx context.Context, key string, old []byte) (bool, error) {
	if old == nil {
		old = []byte{}
	}
	res, err := k.b.w.ExecContext(ctx, `DELETE FROM kv WHERE key = ? AND value = ? AND `+live,
		key, old, time.Now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("sqlite: kv compare-and-delete %q: %w", key, classify(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sqlite: kv compare-and-delete %q: %w", key, err)
	}
	return n == 1, nil
}
