package sqlite

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

const (
	defaultHistoryCount = 100
	maxCount            = 1000
)

// cursor is the opaque paging state of History and Search. Q binds it to
// the request that produced it, so that a cursor replayed against another
// query is refused instead of silently skipping or repeating records.
type cursor struct {
	Q   string      `json:"q"`
	Seq int64       `json:"s,omitempty"` // history: continue below this Seq
	K   []cursorVal `json:"k,omitempty"` // search: sort key values of the last row
	T   string      `json:"t,omitempty"` // search: type of the last row
	I   string      `json:"i,omitempty"` // search: id of the last row
}

// cursorVal keeps the SQL type of a sort key value (JSON alone would turn
// every number into a float).
type cursorVal struct {
	Null bool     `json:"n,omitempty"`
	I    *int64   `json:"i,omitempty"`
	F    *float64 `json:"f,omitempty"`
	S    *string  `json:"s,omitempty"`
}

func (v cursorVal) value() any {
	switch {
	case v.I != nil:
		return *v.I
	case v.F != nil:
		return *v.F
	case v.S != nil:
		return *v.S
	}
	return nil
}

func fingerprint(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:8])
}

func encodeCursor(c cursor) (string, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("sqlite: encode cursor: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func decodeCursor(s, q string) (cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, fmt.Errorf("sqlite: cursor: %w", storage.ErrBadCursor)
	}
	var c cursor
	if err := json.Unmarshal(raw, &c); err != nil {
		return cursor{}, fmt.Errorf("sqlite: cursor: %w", storage.ErrBadCursor)
	}
	if c.Q != q {
		return cursor{}, fmt.Errorf("sqlite: cursor from another query: %w", storage.ErrBadCursor)
	}
	return c, nil
}

// History implements storage.Backend.
func (b *Backend) History(ctx context.Context, req storage.HistoryRequest) (storage.Page, error) {
	if req.ID != "" && req.Type == "" {
		return storage.Page{}, errors.New("sqlite: history: an id needs a type")
	}
	if req.Count < 0 {
		return storage.Page{}, fmt.Errorf("sqlite: history: negative count %d", req.Count)
	}
	count := req.Count
	if count == 0 {
		count = defaultHistoryCount
	}
	count = min(count, maxCount)
	ms := func(t interface{ UnixMilli() int64 }) string { return fmt.Sprint(t.UnixMilli()) }
	fp := fingerprint("history", req.Type, req.ID, ms(req.Since), ms(req.At), ms(req.Before),
		fmt.Sprint(req.Since.IsZero(), req.At.IsZero(), req.Before.IsZero()))

	var where []string
	var args []any
	if req.Type != "" {
		where = append(where, "type = ?")
		args = append(args, req.Type)
	}
	if req.ID != "" {
		where = append(where, "id = ?")
		args = append(args, req.ID)
	}
	if !req.Since.IsZero() {
		where = append(where, "last_updated >= ?")
		args = append(args, req.Since.UnixMilli())
	}
	if !req.Before.IsZero() {
		where = append(where, "last_updated < ?")
		args = append(args, req.Before.UnixMilli())
	}
	if !req.At.IsZero() {
		// The version current at At is the newest one written at or before it.
		sub := []string{"last_updated <= ?"}
		args = append(args, req.At.UnixMilli())
		if req.Type != "" {
			sub = append(sub, "type = ?")
			args = append(args, req.Type)
		}
		if req.ID != "" {
			sub = append(sub, "id = ?")
			args = append(args, req.ID)
		}
		where = append(where, "seq IN (SELECT MAX(seq) FROM versions WHERE "+strings.Join(sub, " AND ")+" GROUP BY type, id)")
	}
	if req.Cursor != "" {
		c, err := decodeCursor(req.Cursor, fp)
		if err != nil {
			return storage.Page{}, err
		}
		if c.Seq <= 0 {
			return storage.Page{}, fmt.Errorf("sqlite: history cursor: %w", storage.ErrBadCursor)
		}
		where = append(where, "seq < ?")
		args = append(args, c.Seq)
	}
	q := `SELECT ` + recordColumns + ` FROM versions v`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq DESC LIMIT ?"
	args = append(args, count+1)

	rows, err := b.r.QueryContext(ctx, q, args...)
	if err != nil {
		return storage.Page{}, fmt.Errorf("sqlite: history: %w", err)
	}
	defer rows.Close()
	page := storage.Page{Total: -1, Records: []storage.Record{}}
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return storage.Page{}, fmt.Errorf("sqlite: history: %w", err)
		}
		page.Records = append(page.Records, r)
	}
	if err := rows.Err(); err != nil {
		return storage.Page{}, fmt.Errorf("sqlite: history: %w", err)
	}
	if len(page.Records) > count {
		page.Records = page.Records[:count]
		if page.Next, err = encodeCursor(cursor{Q: fp, Seq: page.Records[count-1].Seq}); err != nil {
			return storage.Page{}, err
		}
	}
	return page, nil
}
