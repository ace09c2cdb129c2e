package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// kindTable describes where entries of one kind live and which Entry field
// each column holds.
type kindTable struct {
	name string
	cols map[storage.Field]string
}

var (
	stringTable    = kindTable{"idx_string", map[storage.Field]string{storage.FieldText: "text", storage.FieldExact: "exact"}}
	tokenTable     = kindTable{"idx_token", map[storage.Field]string{storage.FieldSystem: "system", storage.FieldCode: "code", storage.FieldText: "text"}}
	referenceTable = kindTable{"idx_reference", map[storage.Field]string{
		storage.FieldRefType: "ref_type", storage.FieldRefID: "ref_id", storage.FieldRefURL: "ref_url",
		storage.FieldSystem: "system", storage.FieldCode: "code"}}
	dateTable     = kindTable{"idx_date", map[storage.Field]string{storage.FieldLow: "low", storage.FieldHigh: "high"}}
	numberTable   = kindTable{"idx_number", map[storage.Field]string{storage.FieldNumLow: "num_low", storage.FieldNumHigh: "num_high", storage.FieldNum: "num"}}
	quantityTable = kindTable{"idx_quantity", map[storage.Field]string{
		storage.FieldNumLow: "num_low", storage.FieldNumHigh: "num_high", storage.FieldNum: "num",
		storage.FieldSystem: "system", storage.FieldCode: "code"}}
	uriTable       = kindTable{"idx_uri", map[storage.Field]string{storage.FieldExact: "exact"}}
	compositeTable = kindTable{"idx_composite", nil}
	partTable      = kindTable{"idx_composite_part", map[storage.Field]string{
		storage.FieldText: "text", storage.FieldExact: "exact", storage.FieldSystem: "system", storage.FieldCode: "code",
		storage.FieldRefType: "ref_type", storage.FieldRefID: "ref_id", storage.FieldRefURL: "ref_url",
		storage.FieldLow: "low", storage.FieldHigh: "high",
		storage.FieldNumLow: "num_low", storage.FieldNumHigh: "num_high", storage.FieldNum: "num"}}
)

func tableOf(k storage.Kind) (kindTable, bool) {
	switch k {
	case storage.KindString:
		return stringTable, true
	case storage.KindToken:
		return tokenTable, true
	case storage.KindReference:
		return referenceTable, true
	case storage.KindDate:
		return dateTable, true
	case storage.KindNumber:
		return numberTable, true
	case storage.KindQuantity:
		return quantityTable, true
	case storage.KindURI:
		return uriTable, true
	case storage.KindComposite:
		return compositeTable, true
	}
	return kindTable{}, false
}

// deleteIndex removes every index row of a resource (its previous version's entries).
var deleteIndex = []string{
	`DELETE FROM idx_string WHERE res_pk = ?`,
	`DELETE FROM idx_token WHERE res_pk = ?`,
	`DELETE FROM idx_reference WHERE res_pk = ?`,
	`DELETE FROM idx_date WHERE res_pk = ?`,
	`DELETE FROM idx_number WHERE res_pk = ?`,
	`DELETE FROM idx_quantity WHERE res_pk = ?`,
	`DELETE FROM idx_uri WHERE res_pk = ?`,
	`DELETE FROM idx_composite_part WHERE res_pk = ?`,
	`DELETE FROM idx_composite WHERE res_pk = ?`,
	`DELETE FROM idx_ref_date WHERE res_pk = ?`,
}

const (
	insertPartHead = `INSERT INTO idx_composite_part (cid, res_pk, param, part, text, exact, system, code, ref_type, ref_id, ref_url, low, high, num_low, num_high, num)`
	insertPart     = insertPartHead + ` VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
)

// stmts are the statements of one Commit transaction, prepared on first use.
type stmts struct {
	tx    *sql.Tx
	cd    *codec
	cache map[string]*sql.Stmt
}

func (s *stmts) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, ok := s.cache[query]
	if !ok {
		var err error
		if st, err = s.tx.PrepareContext(ctx, query); err != nil {
			return nil, fmt.Errorf("prepare: %w", err)
		}
		s.cache[query] = st
	}
	return st.ExecContext(ctx, args...)
}

func (s *stmts) close() {
	for _, st := range s.cache {
		st.Close()
	}
}

// Commit implements storage.Backend: all writes in one transaction. With
// group commit (the default) the transaction is shared with the Commits
// that were waiting at the same time, each inside its own SAVEPOINT, so
// that one fsync makes all of them durable while a failed compare-and-set
// or claim in one of them rolls back only that one.
func (b *Backend) Commit(ctx context.Context, writes ...storage.Write) ([]storage.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: commit: %w", err)
	}
	if len(writes) == 0 {
		return nil, nil
	}
	for i := range writes {
		if err := validateWrite(&writes[i]); err != nil {
			return nil, fmt.Errorf("sqlite: commit: write %d: %w", i, err)
		}
	}
	if err := storage.CheckEvents(writes); err != nil {
		return nil, fmt.Errorf("sqlite: commit: %w", err)
	}
	return b.write(ctx, func(ctx context.Context, st *stmts) ([]storage.Record, error) {
		return applyAll(ctx, st, writes)
	})
}

// CommitWithKV implements storage.KVCommitter: the puts are stored in the
// transaction (and savepoint) of the writes.
func (b *Backend) CommitWithKV(ctx context.Context, puts []storage.KVPut, writes ...storage.Write) ([]storage.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: commit: %w", err)
	}
	for i := range writes {
		if err := validateWrite(&writes[i]); err != nil {
			return nil, fmt.Errorf("sqlite: commit: write %d: %w", i, err)
		}
	}
	for _, p := range puts {
		if p.Key == "" {
			return nil, errors.New("sqlite: commit: kv put without a key")
		}
	}
	return b.write(ctx, func(ctx context.Context, st *stmts) ([]storage.Record, error) {
		recs, err := applyAll(ctx, st, writes)
		if err != nil {
			return nil, err
		}
		for _, p := range puts {
			v := p.Value
			if v == nil {
				v = []byte{}
			}
			if _, err := st.exec(ctx, kvUpsert, p.Key, v, expiry(p.TTL)); err != nil {
				return nil, fmt.Errorf("sqlite: commit: kv put %q: %w", p.Key, err)
			}
		}
		return recs, nil
	})
}

// write runs fn in a write transaction: the writer goroutine's group
// transaction (inside its own savepoint) or, with group commit off, a
// transaction of its own. Every write of the store goes through here, so
// that writes are serialised with each other whatever their kind.
func (b *Backend) write(ctx context.Context, fn applyFunc) ([]storage.Record, error) {
	recs, err := b.writeGrouped(ctx, fn)
	return recs, classify(err)
}

func (b *Backend) writeGrouped(ctx context.Context, fn applyFunc) ([]storage.Record, error) {
	if b.queue == nil {
		return b.writeAlone(ctx, fn)
	}
	req := &commitReq{ctx: ctx, apply: fn, done: make(chan commitRes, 1)}
	select {
	case b.queue <- req:
	case <-b.closing:
		return nil, errors.New("sqlite: commit: backend closed")
	case <-ctx.Done():
		return nil, fmt.Errorf("sqlite: commit: %w", ctx.Err())
	}
	// Once the writer holds the request, the answer must be awaited even if
	// ctx ends: the write may already be part of the group transaction.
	res := <-req.done
	return res.recs, res.err
}

// writeAlone runs one write in its own transaction (group commit off).
func (b *Backend) writeAlone(ctx context.Context, fn applyFunc) ([]storage.Record, error) {
	tx, err := b.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlite: commit: begin: %w", err)
	}
	defer tx.Rollback()
	st := &stmts{tx: tx, cd: b.cd, cache: map[string]*sql.Stmt{}}
	defer st.close()
	out, err := fn(ctx, st)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("sqlite: commit: %w", err)
	}
	b.groups.Add(1)
	return out, nil
}

// applyFunc is the work of one write request inside the write transaction.
type applyFunc func(ctx context.Context, st *stmts) ([]storage.Record, error)

// commitReq is one write request (a Commit or a Reindex) waiting for the
// writer goroutine.
type commitReq struct {
	ctx   context.Context
	apply applyFunc
	done  chan commitRes // buffered: the writer never blocks on a reply
}

type commitRes struct {
	recs []storage.Record
	err  error
}

// writeLoop is the writer goroutine of group commit. It takes one request,
// then every request already waiting (up to max), and commits them in one
// transaction. It adds no delay of its own: groups form from the Commits
// that arrive while the previous group is being written and synced.
func (b *Backend) writeLoop(ctx context.Context, max int) {
	for {
		var first *commitReq
		select {
		case first = <-b.queue:
		case <-b.closing:
			return
		}
		group := []*commitReq{first}
	drain:
		for len(group) < max {
			select {
			case r := <-b.queue:
				group = append(group, r)
			default:
				break drain
			}
		}
		b.commitGroup(ctx, group)
	}
}

// commitGroup writes a group in one transaction and answers every request.
// Statements run under the writer's own context, never a caller's: a
// cancelled statement interrupts the connection, which would roll back the
// whole transaction and with it the other callers' writes.
func (b *Backend) commitGroup(ctx context.Context, group []*commitReq) {
	res := make([]commitRes, len(group))
	reply := func() {
		for i, r := range group {
			r.done <- res[i]
		}
	}
	defer reply()
	fail := func(err error) {
		for i := range res {
			if res[i].err == nil {
				res[i] = commitRes{err: err}
			}
		}
	}
	tx, err := b.w.BeginTx(ctx, nil)
	if err != nil {
		fail(fmt.Errorf("sqlite: commit: begin: %w", err))
		return
	}
	defer tx.Rollback()
	st := &stmts{tx: tx, cd: b.cd, cache: map[string]*sql.Stmt{}}
	defer st.close()
	for i, r := range group {
		if err := r.ctx.Err(); err != nil {
			res[i].err = fmt.Errorf("sqlite: commit: %w", err)
			continue
		}
		if _, err := tx.ExecContext(ctx, `SAVEPOINT w`); err != nil {
			fail(fmt.Errorf("sqlite: commit: savepoint: %w", err))
			return
		}
		recs, err := r.apply(ctx, st)
		if err != nil {
			res[i].err = err
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO w`); err != nil {
				fail(fmt.Errorf("sqlite: commit: rollback to savepoint: %w", err))
				return
			}
		} else {
			res[i].recs = recs
		}
		if _, err := tx.ExecContext(ctx, `RELEASE w`); err != nil {
			fail(fmt.Errorf("sqlite: commit: release savepoint: %w", err))
			return
		}
	}
	if err := tx.Commit(); err != nil {
		// Nothing of the group is durable: the callers whose writes had
		// succeeded get the error too.
		err = fmt.Errorf("sqlite: commit: %w", err)
		for i := range res {
			if res[i].err == nil {
				res[i] = commitRes{err: err}
			}
		}
		return
	}
	b.groups.Add(1)
}

func validateWrite(w *storage.Write) error {
	switch {
	case w.Type == "" || w.ID == "":
		return errors.New("type and id are required")
	case w.ExpectVersion < 0:
		return fmt.Errorf("negative ExpectVersion %d", w.ExpectVersion)
	case w.VersionID != w.ExpectVersion+1:
		return fmt.Errorf("VersionID %d is not ExpectVersion+1 (%d)", w.VersionID, w.ExpectVersion+1)
	case w.LastUpdated.IsZero():
		return errors.New("LastUpdated is required")
	case w.Deleted && len(w.JSON) > 0:
		return errors.New("a delete carries no JSON")
	case w.Deleted && len(w.Index) > 0:
		return errors.New("a delete carries no index entries")
	case !w.Deleted && len(w.JSON) == 0:
		return errors.New("JSON is required")
	}
	return validateIndex(w.Index)
}

// validateIndex rejects entries that have no table to go to.
func validateIndex(index []storage.Entry) error {
	for i, e := range index {
		if e.Param == "" {
			return fmt.Errorf("index entry %d: empty param", i)
		}
		if _, ok := tableOf(e.Kind); !ok {
			return fmt.Errorf("index entry %d (%s): unknown kind %v", i, e.Param, e.Kind)
		}
		for j, p := range e.Parts {
			if e.Kind != storage.KindComposite {
				return fmt.Errorf("index entry %d (%s): parts on a %v entry", i, e.Param, e.Kind)
			}
			if len(p.Parts) > 0 {
				return fmt.Errorf("index entry %d (%s) part %d: nested composite", i, e.Param, j)
			}
		}
	}
	return nil
}

// apply writes one version inside the Commit transaction.
func apply(ctx context.Context, st *stmts, w *storage.Write) (storage.Record, error) {
	var pk, cur, prevSeq int64
	var deleted bool
	err := st.tx.QueryRowContext(ctx, `SELECT pk, version, deleted, seq FROM resources WHERE type = ? AND id = ?`, w.Type, w.ID).
		Scan(&pk, &cur, &deleted, &prevSeq)
	exists := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return storage.Record{}, fmt.Errorf("read current version: %w", err)
	}
	if cur != w.ExpectVersion {
		return storage.Record{}, fmt.Errorf("expected version %d, current %d: %w", w.ExpectVersion, cur, storage.ErrVersionConflict)
	}
	if w.Claim != "" && !w.Deleted {
		var holder int64
		err := st.tx.QueryRowContext(ctx, `SELECT res_pk FROM claims WHERE claim = ?`, w.Claim).Scan(&holder)
		switch {
		case err == nil && (!exists || holder != pk):
			return storage.Record{}, fmt.Errorf("claim %q: %w", w.Claim, storage.ErrDuplicateClaim)
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return storage.Record{}, fmt.Errorf("read claim: %w", err)
		}
	}

	var res sql.Result
	if w.Deleted {
		// A delete keeps the entries of the version it deletes, so that a
		// filtered history attributes it to the same caller (prevSeq 0:
		// nothing to copy, NULL).
		res, err = st.exec(ctx, `INSERT INTO versions (type, id, version, last_updated, deleted, method, json, entries)
			VALUES (?, ?, ?, ?, ?, ?, NULL, (SELECT entries FROM versions WHERE seq = ?))`,
			w.Type, w.ID, w.VersionID, w.LastUpdated.UnixMilli(), w.Deleted, w.Method, prevSeq)
	} else {
		entries, eerr := encodeEntries(st.cd, w.Index)
		if eerr != nil {
			return storage.Record{}, eerr
		}
		res, err = st.exec(ctx, `INSERT INTO versions (type, id, version, last_updated, deleted, method, json, entries) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			w.Type, w.ID, w.VersionID, w.LastUpdated.UnixMilli(), w.Deleted, w.Method, st.cd.encodeJSON(w.JSON), entries)
	}
	if err != nil {
		return storage.Record{}, fmt.Errorf("insert version: %w", err)
	}
	seq, err := res.LastInsertId()
	if err != nil {
		return storage.Record{}, fmt.Errorf("version seq: %w", err)
	}
	if w.Deleted {
		if _, err := st.exec(ctx, `INSERT OR IGNORE INTO version_refs (param, ref_id, ref_type, seq)
			SELECT param, ref_id, ref_type, ? FROM version_refs WHERE seq = ?`, seq, prevSeq); err != nil {
			return storage.Record{}, fmt.Errorf("copy version references: %w", err)
		}
	} else if err := insertVersionRefs(ctx, st, seq, w.Index); err != nil {
		return storage.Record{}, err
	}

	if exists {
		if _, err := st.exec(ctx, `UPDATE resources SET version = ?, seq = ?, deleted = ? WHERE pk = ?`, w.VersionID, seq, w.Deleted, pk); err != nil {
			return storage.Record{}, fmt.Errorf("update resource: %w", err)
		}
		if !deleted {
			for _, q := range deleteIndex {
				if _, err := st.exec(ctx, q, pk); err != nil {
					return storage.Record{}, fmt.Errorf("replace index: %w", err)
				}
			}
		}
	} else {
		res, err := st.exec(ctx, `INSERT INTO resources (type, id, version, seq, deleted) VALUES (?, ?, ?, ?, ?)`, w.Type, w.ID, w.VersionID, seq, w.Deleted)
		if err != nil {
			return storage.Record{}, fmt.Errorf("insert resource: %w", err)
		}
		if pk, err = res.LastInsertId(); err != nil {
			return storage.Record{}, fmt.Errorf("resource pk: %w", err)
		}
	}

	if w.Deleted {
		if _, err := st.exec(ctx, `DELETE FROM claims WHERE res_pk = ?`, pk); err != nil {
			return storage.Record{}, fmt.Errorf("release claims: %w", err)
		}
	} else if w.Claim != "" {
		if _, err := st.exec(ctx, `INSERT OR IGNORE INTO claims (claim, res_pk) VALUES (?, ?)`, w.Claim, pk); err != nil {
			return storage.Record{}, fmt.Errorf("claim: %w", err)
		}
	}
	for i := range w.Index {
		if err := insertEntry(ctx, st, pk, &w.Index[i]); err != nil {
			return storage.Record{}, fmt.Errorf("index %s: %w", w.Index[i].Param, err)
		}
	}
	if err := insertRows(ctx, st, insertRefDate, refDateRows(pk, w.Index)); err != nil {
		return storage.Record{}, fmt.Errorf("index reference dates: %w", err)
	}
	if err := insertEvents(ctx, st, seq, w.Events); err != nil {
		return storage.Record{}, err
	}
	rec := w.Record
	rec.Seq = seq
	if w.Deleted {
		rec.JSON = nil
	}
	return rec, nil
}

// partFields are the fields of a part row, in the order of its columns.
var partFields = [...]storage.Field{storage.FieldText, storage.FieldExact, storage.FieldSystem, storage.FieldCode,
	storage.FieldRefType, storage.FieldRefID, storage.FieldRefURL,
	storage.FieldLow, storage.FieldHigh, storage.FieldNumLow, storage.FieldNumHigh, storage.FieldNum}

// partValues are the column values of a composite part (partFields order):
// NULL for the fields that the table of the part's kind has no column for
// (a token part has no date, a quantity part no text), so that the
// partial value indexes skip it; every field for a part of no known kind.
func partValues(p *storage.Entry) []any {
	t, ok := tableOf(p.Kind)
	if !ok || p.Kind == storage.KindComposite {
		t = partTable
	}
	vals := []any{p.Text, p.Exact, p.System, p.Code, p.RefType, p.RefID, p.RefURL, p.Low, p.High, p.NumLow, p.NumHigh, p.Num}
	for i, f := range partFields {
		if _, ok := t.cols[f]; !ok {
			vals[i] = nil
		}
	}
	return vals
}

func insertEntry(ctx context.Context, st *stmts, pk int64, e *storage.Entry) error {
	var err error
	switch e.Kind {
	case storage.KindString:
		_, err = st.exec(ctx, `INSERT INTO idx_string (res_pk, param, text, exact) VALUES (?, ?, ?, ?)`, pk, e.Param, e.Text, e.Exact)
	case storage.KindToken:
		_, err = st.exec(ctx, `INSERT INTO idx_token (res_pk, param, system, code, text) VALUES (?, ?, ?, ?, ?)`, pk, e.Param, e.System, e.Code, e.Text)
	case storage.KindReference:
		_, err = st.exec(ctx, `INSERT INTO idx_reference (res_pk, param, ref_type, ref_id, ref_url, system, code) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			pk, e.Param, e.RefType, e.RefID, e.RefURL, e.System, e.Code)
	case storage.KindDate:
		_, err = st.exec(ctx, `INSERT INTO idx_date (res_pk, param, low, high) VALUES (?, ?, ?, ?)`, pk, e.Param, e.Low, e.High)
	case storage.KindNumber:
		_, err = st.exec(ctx, `INSERT INTO idx_number (res_pk, param, num_low, num_high, num) VALUES (?, ?, ?, ?, ?)`, pk, e.Param, e.NumLow, e.NumHigh, e.Num)
	case storage.KindQuantity:
		_, err = st.exec(ctx, `INSERT INTO idx_quantity (res_pk, param, num_low, num_high, num, system, code) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			pk, e.Param, e.NumLow, e.NumHigh, e.Num, e.System, e.Code)
	case storage.KindURI:
		_, err = st.exec(ctx, `INSERT INTO idx_uri (res_pk, param, exact) VALUES (?, ?, ?)`, pk, e.Param, e.Exact)
	case storage.KindComposite:
		res, err := st.exec(ctx, `INSERT INTO idx_composite (res_pk, param) VALUES (?, ?)`, pk, e.Param)
		if err != nil {
			return err
		}
		cid, err := res.LastInsertId()
		if err != nil {
			return err
		}
		for i := range e.Parts {
			if _, err := st.exec(ctx, insertPart, append([]any{cid, pk, e.Param, i}, partValues(&e.Parts[i])...)...); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unknown kind %v", e.Kind)
	}
	return err
}

const recordColumns = `v.seq, v.type, v.id, v.version, v.last_updated, v.deleted, v.method, v.json`

type scanner interface{ Scan(dest ...any) error }

// scanRecord scans a row of recordColumns (then extra) and decodes its
// stored JSON (with cd nil it leaves it stored, for the caller to decode).
func scanRecord(cd *codec, s scanner, extra ...any) (storage.Record, error) {
	var r storage.Record
	var ms int64
	var method sql.NullString
	dest := append([]any{&r.Seq, &r.Type, &r.ID, &r.VersionID, &ms, &r.Deleted, &method, &r.JSON}, extra...)
	if err := s.Scan(dest...); err != nil {
		return storage.Record{}, err
	}
	var err error
	if cd != nil {
		if r.JSON, err = cd.decode(r.JSON); err != nil {
			return storage.Record{}, err
		}
	}
	r.LastUpdated = time.UnixMilli(ms).UTC()
	r.Method = method.String
	return r, nil
}

// Read implements storage.Backend.
func (b *Backend) Read(ctx context.Context, typ, id string) (storage.Record, error) {
	row := b.r.QueryRowContext(ctx, `SELECT `+recordColumns+` FROM resources r JOIN versions v ON v.seq = r.seq WHERE r.type = ? AND r.id = ?`, typ, id)
	r, err := scanRecord(b.cd, row)
	if errors.Is(err, sql.ErrNoRows) {
		return storage.Record{}, fmt.Errorf("sqlite: read %s/%s: %w", typ, id, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Record{}, fmt.Errorf("sqlite: read %s/%s: %w", typ, id, err)
	}
	return r, nil
}

// ReadVersion implements storage.Backend.
func (b *Backend) ReadVersion(ctx context.Context, typ, id string, version int64) (storage.Record, error) {
	row := b.r.QueryRowContext(ctx, `SELECT `+recordColumns+` FROM versions v WHERE v.type = ? AND v.id = ? AND v.version = ?`, typ, id, version)
	r, err := scanRecord(b.cd, row)
	if errors.Is(err, sql.ErrNoRows) {
		return storage.Record{}, fmt.Errorf("sqlite: read %s/%s/_history/%d: %w", typ, id, version, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Record{}, fmt.Errorf("sqlite: read %s/%s/_history/%d: %w", typ, id, version, err)
	}
	return r, nil
}
