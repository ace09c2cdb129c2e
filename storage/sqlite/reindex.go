package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/anodyne-fhir/anodyne/storage"
)

var _ storage.Reindexer = (*Backend)(nil)

// Reindex implements storage.Reindexer. It runs through the writer like a
// Commit, so the version check and the replacement of the index rows
// happen in one write transaction that no Commit can interleave with: a
// newer version committed first makes it fail, one committed after it
// replaces its rows.
func (b *Backend) Reindex(ctx context.Context, typ, id string, version int64, index []storage.Entry) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sqlite: reindex %s/%s: %w", typ, id, err)
	}
	if typ == "" || id == "" {
		return fmt.Errorf("sqlite: reindex %q/%q: type and id are required", typ, id)
	}
	if err := validateIndex(index); err != nil {
		return fmt.Errorf("sqlite: reindex %s/%s: %w", typ, id, err)
	}
	_, err := b.write(ctx, func(ctx context.Context, st *stmts) ([]storage.Record, error) {
		if err := reindex(ctx, st, typ, id, version, index); err != nil {
			return nil, fmt.Errorf("sqlite: reindex %s/%s: %w", typ, id, err)
		}
		return nil, nil
	})
	return err
}

// reindex replaces the index rows of the current version inside the write transaction.
func reindex(ctx context.Context, st *stmts, typ, id string, version int64, index []storage.Entry) error {
	var pk, cur, seq int64
	var deleted bool
	err := st.tx.QueryRowContext(ctx, `SELECT pk, version, deleted, seq FROM resources WHERE type = ? AND id = ?`, typ, id).
		Scan(&pk, &cur, &deleted, &seq)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return storage.ErrNotFound
	case err != nil:
		return fmt.Errorf("read current version: %w", err)
	case deleted:
		return fmt.Errorf("deleted at version %d: %w", cur, storage.ErrNotFound)
	case cur != version:
		return fmt.Errorf("version %d is not the current %d: %w", version, cur, storage.ErrVersionConflict)
	}
	for _, q := range deleteIndex {
		if _, err := st.exec(ctx, q, pk); err != nil {
			return fmt.Errorf("remove index: %w", err)
		}
	}
	for i := range index {
		if err := insertEntry(ctx, st, pk, &index[i]); err != nil {
			return fmt.Errorf("index %s: %w", index[i].Param, err)
		}
	}
	if err := insertRows(ctx, st, insertRefDate, refDateRows(pk, index)); err != nil {
		return fmt.Errorf("index reference dates: %w", err)
	}
	// The version's own entries (for filtered history) follow its index.
	var raw []byte
	if err := st.tx.QueryRowContext(ctx, `SELECT entries FROM versions WHERE seq = ?`, seq).Scan(&raw); err != nil {
		return fmt.Errorf("read version entries: %w", err)
	}
	old, err := decodeEntries(st.cd, raw)
	if err != nil {
		return err
	}
	if err := deleteVersionRefs(ctx, st, seq, old); err != nil {
		return err
	}
	enc, err := encodeEntries(st.cd, index)
	if err != nil {
		return err
	}
	if _, err := st.exec(ctx, `UPDATE versions SET entries = ? WHERE seq = ?`, enc, seq); err != nil {
		return fmt.Errorf("replace version entries: %w", err)
	}
	return insertVersionRefs(ctx, st, seq, index)
}
