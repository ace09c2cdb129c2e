package sqlite

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
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

// History implements storage.Backend. Without a filter the page is one
// LIMITed query. With one, the rows come newest first from a query
// narrowed, where the filter allows it, to the versions that reference the
// filter's targets (version_refs) or carry its ids; each is then checked
// with storage.Matches against its own stored entries until the page is
// full, so that pages hold matching versions only.
func (b *Backend) History(ctx context.Context, req storage.HistoryRequest) (storage.Page, error) {
	h, err := planHistory(req)
	if err != nil {
		return storage.Page{}, err
	}
	page := storage.Page{Total: -1, Records: []storage.Record{}}
	if h.none {
		return page, nil
	}
	rows, err := b.r.QueryContext(ctx, h.sql, h.args...)
	if err != nil {
		return storage.Page{}, fmt.Errorf("sqlite: history: %w", err)
	}
	defer rows.Close()
	for len(page.Records) <= h.count && rows.Next() {
		var raw []byte
		r, err := scanRecord(nil, rows, &raw) // JSON still stored: decoded once accepted
		if err != nil {
			return storage.Page{}, fmt.Errorf("sqlite: history: %w", err)
		}
		if !h.exact {
			ok, err := matchesAny(b.cd, h.clauses, h.may, r, raw)
			if err != nil {
				return storage.Page{}, fmt.Errorf("sqlite: history %s/%s/%d: %w", r.Type, r.ID, r.VersionID, err)
			}
			if !ok {
				continue
			}
		}
		if r.JSON, err = b.cd.decode(r.JSON); err != nil {
			return storage.Page{}, fmt.Errorf("sqlite: history %s/%s/%d: %w", r.Type, r.ID, r.VersionID, err)
		}
		page.Records = append(page.Records, r)
	}
	if err := rows.Err(); err != nil {
		return storage.Page{}, fmt.Errorf("sqlite: history: %w", err)
	}
	if len(page.Records) > h.count {
		page.Records = page.Records[:h.count]
		if page.Next, err = encodeCursor(cursor{Q: h.fp, Seq: page.Records[h.count-1].Seq}); err != nil {
			return storage.Page{}, err
		}
	}
	return page, nil
}

// historyPlan is the statement of one History call.
type historyPlan struct {
	sql     string
	args    []any
	clauses []storage.HistoryClause
	may     []func([]byte) bool // per clause: mayMatch of its filter
	exact   bool                // the statement selects exactly the page's versions (LIMITed)
	none    bool                // nothing can match: no statement
	count   int
	fp      string // the cursor binding
}

func planHistory(req storage.HistoryRequest) (historyPlan, error) {
	if req.ID != "" && req.Type == "" {
		return historyPlan{}, errors.New("sqlite: history: an id needs a type")
	}
	if req.Count < 0 {
		return historyPlan{}, fmt.Errorf("sqlite: history: negative count %d", req.Count)
	}
	clauses, err := req.Clauses()
	if err != nil {
		return historyPlan{}, fmt.Errorf("sqlite: %w", err)
	}
	h := historyPlan{clauses: clauses, exact: true, count: req.Count}
	for _, c := range clauses {
		h.may = append(h.may, mayMatch(c.Filter)) // nil Filter: always true
	}
	if h.count == 0 {
		h.count = defaultHistoryCount
	}
	h.count = min(h.count, maxCount)
	ms := func(t interface{ UnixMilli() int64 }) string { return fmt.Sprint(t.UnixMilli()) }
	h.fp = fingerprint("history", req.Type, req.ID, ms(req.Since), ms(req.At), ms(req.Before),
		fmt.Sprint(req.Since.IsZero(), req.At.IsZero(), req.Before.IsZero()), storage.HistoryKey(clauses))

	var where []string
	if req.Type != "" {
		where = append(where, "v.type = ?")
		h.args = append(h.args, req.Type)
	}
	if req.ID != "" {
		where = append(where, "v.id = ?")
		h.args = append(h.args, req.ID)
	}
	if !req.Since.IsZero() {
		where = append(where, "v.last_updated >= ?")
		h.args = append(h.args, req.Since.UnixMilli())
	}
	if !req.Before.IsZero() {
		where = append(where, "v.last_updated < ?")
		h.args = append(h.args, req.Before.UnixMilli())
	}
	if !req.At.IsZero() {
		// The version current at At is the newest one written at or before it.
		sub := []string{"last_updated <= ?"}
		h.args = append(h.args, req.At.UnixMilli())
		if req.Type != "" {
			sub = append(sub, "type = ?")
			h.args = append(h.args, req.Type)
		}
		if req.ID != "" {
			sub = append(sub, "id = ?")
			h.args = append(h.args, req.ID)
		}
		where = append(where, "v.seq IN (SELECT MAX(seq) FROM versions WHERE "+strings.Join(sub, " AND ")+" GROUP BY type, id)")
	}
	if req.Cursor != "" {
		c, err := decodeCursor(req.Cursor, h.fp)
		if err != nil {
			return historyPlan{}, err
		}
		if c.Seq <= 0 {
			return historyPlan{}, fmt.Errorf("sqlite: history cursor: %w", storage.ErrBadCursor)
		}
		where = append(where, "v.seq < ?")
		h.args = append(h.args, c.Seq)
	}
	if len(clauses) == 0 {
		h.none = true // TypeFilters without a type: nothing is visible
		return h, nil
	}
	var alts []string
	for _, c := range clauses {
		var parts []string
		if c.Type != "" {
			parts = append(parts, "v.type = ?")
			h.args = append(h.args, c.Type)
		}
		if c.Filter != nil {
			h.exact = false
			if cond, cargs, ok := narrow(c.Filter); ok {
				parts = append(parts, cond)
				h.args = append(h.args, cargs...)
			}
		}
		if len(parts) == 0 {
			alts = nil // one alternative admits every version
			break
		}
		alts = append(alts, "("+strings.Join(parts, " AND ")+")")
	}
	if len(alts) > 0 {
		where = append(where, "("+strings.Join(alts, " OR ")+")")
	}
	h.sql = `SELECT ` + recordColumns + `, v.entries FROM versions v`
	if len(where) > 0 {
		h.sql += " WHERE " + strings.Join(where, " AND ")
	}
	h.sql += " ORDER BY v.seq DESC"
	if h.exact {
		h.sql += " LIMIT ?"
		h.args = append(h.args, h.count+1)
	}
	return h, nil
}

func matchesAny(cd *codec, clauses []storage.HistoryClause, may []func([]byte) bool, r storage.Record, stored []byte) (bool, error) {
	raw, err := cd.decode(stored)
	if err != nil {
		return false, fmt.Errorf("decode index entries: %w", err)
	}
	// NULL (written before schema 3) stays nil: MatchesVersion decides.
	if raw != nil {
		possible := false
		for i, c := range clauses {
			if (c.Type == "" || c.Type == r.Type) && may[i](raw) {
				possible = true
				break
			}
		}
		if !possible {
			return false, nil
		}
	}
	entries, err := decodeEntries(cd, raw)
	if err != nil {
		return false, err
	}
	for _, c := range clauses {
		ok, err := storage.MatchesVersion(c, r.Type, r.ID, entries)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// narrow returns a condition on versions v that holds for every version
// the filter can match (a superset: the rows are re-checked), when the
// filter has one that an index serves: ids, or references by id. ok is
// false when no such condition exists and every version must be read.
func narrow(e storage.Expr) (string, []any, bool) {
	n, ok := narrowTo(e)
	return n.cond(), n.args, ok
}

// narrowing is a bound on the versions a filter can match: seqs, a SELECT
// of candidate seqs (kept apart so that the alternatives of an Or become
// one UNION, which SQLite drives from the index, where an OR of IN lists
// makes it walk the type's versions), or a plain condition on v.
type narrowing struct {
	seqs  string
	where string
	args  []any
}

func (n narrowing) cond() string {
	if n.seqs != "" {
		return "v.seq IN (" + n.seqs + ")"
	}
	return n.where
}

func narrowTo(e storage.Expr) (narrowing, bool) {
	switch x := e.(type) {
	case storage.IDs:
		if len(x.IDs) == 0 {
			return narrowing{where: "0"}, true
		}
		args := make([]any, len(x.IDs))
		for i, id := range x.IDs {
			args[i] = id
		}
		return narrowing{where: "v.id IN (" + placeholders(len(x.IDs)) + ")", args: args}, true
	case storage.Match:
		id, ok := eqValue(x.Cond, storage.FieldRefID)
		if x.Kind != storage.KindReference || !ok {
			return narrowing{}, false // no index serves it: mayMatch in Go
		}
		n := narrowing{seqs: "SELECT seq FROM version_refs WHERE param = ? AND ref_id = ?", args: []any{x.Param, id}}
		if typ, ok := eqValue(x.Cond, storage.FieldRefType); ok {
			n.seqs += " AND ref_type = ?"
			n.args = append(n.args, typ)
		}
		return n, true
	case storage.And:
		// Any narrowed conjunct bounds the conjunction.
		var conds []string
		var args []any
		for _, s := range x.Exprs {
			if n, ok := narrowTo(s); ok {
				conds = append(conds, n.cond())
				args = append(args, n.args...)
			}
		}
		if len(conds) == 0 {
			return narrowing{}, false
		}
		return narrowing{where: "(" + strings.Join(conds, " AND ") + ")", args: args}, true
	case storage.Or:
		// A disjunction is bounded only when every alternative is.
		if len(x.Exprs) == 0 {
			return narrowing{where: "0"}, true
		}
		var seqs, conds []string
		var args []any
		for _, s := range x.Exprs {
			n, ok := narrowTo(s)
			if !ok {
				return narrowing{}, false
			}
			seqs = append(seqs, n.seqs)
			conds = append(conds, n.cond())
			args = append(args, n.args...)
		}
		if !slices.Contains(seqs, "") {
			return narrowing{seqs: strings.Join(seqs, " UNION ALL "), args: args}, true
		}
		return narrowing{where: "(" + strings.Join(conds, " OR ") + ")", args: args}, true
	}
	return narrowing{}, false
}

// entryNeedles are the bytes an entry matching m must contain in the
// stored JSON (see entries.go): the opening of an entry of the parameter
// and kind, and the encoding of every string it must equal. Since the
// entries are stored compressed (schema 5), SQL cannot look for them;
// History checks them on the decompressed JSON, which is far cheaper than
// decoding the entries of every version, and re-checks what passes with
// storage.Matches.
func entryNeedles(m storage.Match) [][]byte {
	head, err := json.Marshal(m.Param)
	if err != nil || m.Param == "" {
		return nil
	}
	out := [][]byte{[]byte(`{"p":` + string(head) + `,"k":` + strconv.Itoa(int(m.Kind)))}
	for _, v := range eqStrings(m.Cond) {
		if enc, err := json.Marshal(v); err == nil {
			out = append(out, enc)
		}
	}
	return out
}

// mayMatch compiles e into a check of entries (plain JSON) that is false
// only when a Match that e requires cannot be among them.
func mayMatch(e storage.Expr) func(entries []byte) bool {
	switch x := e.(type) {
	case storage.Match:
		needles := entryNeedles(x)
		return func(entries []byte) bool {
			for _, n := range needles {
				if !bytes.Contains(entries, n) {
					return false
				}
			}
			return true
		}
	case storage.And:
		subs := make([]func([]byte) bool, len(x.Exprs))
		for i, s := range x.Exprs {
			subs[i] = mayMatch(s)
		}
		return func(entries []byte) bool {
			for _, f := range subs {
				if !f(entries) {
					return false
				}
			}
			return true
		}
	case storage.Or:
		subs := make([]func([]byte) bool, len(x.Exprs))
		for i, s := range x.Exprs {
			subs[i] = mayMatch(s)
		}
		return func(entries []byte) bool {
			return slices.ContainsFunc(subs, func(f func([]byte) bool) bool { return f(entries) })
		}
	}
	return func([]byte) bool { return true }
}

// eqStrings lists the non-empty strings an entry condition requires by Eq
// on a string field, through conjunctions and composite parts.
func eqStrings(cond storage.Expr) []string {
	switch x := cond.(type) {
	case storage.Cmp:
		if v, ok := x.Value.(string); ok && v != "" && x.Op == storage.OpEq && stringField(x.Field) {
			return []string{v}
		}
	case storage.And:
		var out []string
		for _, s := range x.Exprs {
			out = append(out, eqStrings(s)...)
		}
		return out
	case storage.Part:
		return eqStrings(x.Cond)
	}
	return nil
}

func stringField(f storage.Field) bool {
	switch f {
	case storage.FieldText, storage.FieldExact, storage.FieldSystem, storage.FieldCode,
		storage.FieldRefType, storage.FieldRefID, storage.FieldRefURL:
		return true
	}
	return false
}

// eqValue finds "field Eq value" among the conjuncts of an entry condition.
func eqValue(cond storage.Expr, f storage.Field) (string, bool) {
	switch x := cond.(type) {
	case storage.Cmp:
		// An empty value matches entries without one, which version_refs
		// does not list: no bound.
		if v, ok := x.Value.(string); ok && v != "" && x.Field == f && x.Op == storage.OpEq {
			return v, true
		}
	case storage.And:
		for _, s := range x.Exprs {
			if v, ok := eqValue(s, f); ok {
				return v, true
			}
		}
	}
	return "", false
}
