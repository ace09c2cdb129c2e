package sqlite

import (
	"context"
	"fmt"
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

// The outbox table holds storage.Events until they are deleted:
//
//	outbox(n PK AUTOINCREMENT, stream, id UNIQUE, seq, data)
//
// n is the position of the event among all events ever appended (never
// reused), so (seq, n) orders a stream by commit order and then by the
// event's place in its write. SQLite has one writer, so every committed
// event is decided and a stream is always readable to its end.

var _ storage.Outbox = (*Backend)(nil)

const outboxSchema = `CREATE TABLE IF NOT EXISTS outbox (
		n INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, id TEXT NOT NULL UNIQUE,
		seq INTEGER NOT NULL, data BLOB NOT NULL) STRICT`

const outboxIndex = `CREATE INDEX IF NOT EXISTS outbox_stream ON outbox (stream, seq, n)`

// insertEvents appends the events of one write inside its transaction.
func insertEvents(ctx context.Context, st *stmts, seq int64, evs []storage.Event) error {
	for _, ev := range evs {
		data := ev.Data
		if data == nil {
			data = []byte{}
		}
		if _, err := st.exec(ctx, `INSERT INTO outbox (stream, id, seq, data) VALUES (?, ?, ?, ?)`, ev.Stream, ev.ID, seq, data); err != nil {
			return fmt.Errorf("outbox event %q: %w", ev.ID, err)
		}
	}
	return nil
}

// OutboxStreams implements storage.Outbox.
func (b *Backend) OutboxStreams(ctx context.Context, after string, n int) ([]string, error) {
	rows, err := b.r.QueryContext(ctx, `SELECT DISTINCT stream FROM outbox WHERE stream > ? ORDER BY stream LIMIT ?`, after, max(n, 1))
	if err != nil {
		return nil, fmt.Errorf("sqlite: outbox streams: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("sqlite: outbox streams: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: outbox streams: %w", err)
	}
	return out, nil
}

// OutboxRead implements storage.Outbox.
func (b *Backend) OutboxRead(ctx context.Context, stream string, n int) ([]storage.Event, error) {
	rows, err := b.r.QueryContext(ctx, `SELECT id, seq, data FROM outbox WHERE stream = ? ORDER BY seq, n LIMIT ?`, stream, max(n, 1))
	if err != nil {
		return nil, fmt.Errorf("sqlite: outbox read %q: %w", stream, err)
	}
	defer rows.Close()
	var out []storage.Event
	for rows.Next() {
		ev := storage.Event{Stream: stream}
		if err := rows.Scan(&ev.ID, &ev.Seq, &ev.Data); err != nil {
			return nil, fmt.Errorf("sqlite: outbox read %q: %w", stream, err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: outbox read %q: %w", stream, err)
	}
	return out, nil
}

// OutboxDelete implements storage.Outbox.
func (b *Backend) OutboxDelete(ctx context.Context, stream string, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, 0, len(ids)+1)
	args = append(args, stream)
	for _, id := range ids {
		args = append(args, id)
	}
	q := `DELETE FROM outbox WHERE stream = ? AND id IN (?` + strings.Repeat(",?", len(ids)-1) + `)`
	_, err := b.write(ctx, func(ctx context.Context, st *stmts) ([]storage.Record, error) {
		_, err := st.tx.ExecContext(ctx, q, args...)
		return nil, err
	})
	if err != nil {
		return fmt.Errorf("sqlite: outbox delete in %q: %w", stream, err)
	}
	return nil
}

// OutboxPurge implements storage.Outbox.
func (b *Backend) OutboxPurge(ctx context.Context, stream string) error {
	_, err := b.write(ctx, func(ctx context.Context, st *stmts) ([]storage.Record, error) {
		_, err := st.exec(ctx, `DELETE FROM outbox WHERE stream = ?`, stream)
		return nil, err
	})
	if err != nil {
		return fmt.Errorf("sqlite: outbox purge %q: %w", stream, err)
	}
	return nil
}
