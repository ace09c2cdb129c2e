package fhir

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Idempotency-Key (draft-ietf-httpapi-idempotency-key-header) on POST of
// a resource (create, conditional create) and of a transaction or batch
// Bundle: a client that does not know whether its request got through (a
// timeout, a killed importer) sends it again with the same key and gets
// the first answer instead of a second copy of the data.
//
// What the first request changed is recorded in the SAME storage Commit as
// the change (commitMarks, storage.KVCommitter): either both are stored or
// neither, so no moment of a crash leaves a change without its record (a
// duplicate on retry) or a record without its change. A transaction or a
// create has one record; a batch, whose entries commit one by one, has one
// per entry, so a retry runs again only the entries that committed nothing.
// Failures are not recorded: a request that changed nothing is simply run
// again. Keys are scoped to the caller (issuer, client, subject), so one
// client can neither read nor block another's answers.

const (
	// IdempotencyHeader is the request header naming a request's key.
	IdempotencyHeader = "Idempotency-Key"
	// idemPrefix keys the records: idempotency/<scope hash>[/<entry>].
	idemPrefix = "idempotency/"
	// idemLockPrefix keys the in-flight lock of a key, so that two copies
	// of one request sent at once cannot both run.
	idemLockPrefix = "idempotency-lock/"
	// idemTTL is how long an answer can be replayed: long enough for any
	// retry after a crash, short enough that the records do not pile up.
	idemTTL = 72 * time.Hour
	// idemLockTTL bounds a lock left by a process that died mid-request.
	idemLockTTL = 30 * time.Second
	// maxIdemKey bounds the header; keys are opaque to the server.
	maxIdemKey = 255
)

// idemRecord is the stored answer of a request with a key. Its JSON form
// is pinned (field names and the version V=1); TestIdempotencyRecordEncoding
// keeps it so.
type idemRecord struct {
	V       int          `json:"v"`
	Hash    string       `json:"hash"` // sha256 of the request: method, path, conditional header, body
	Results []idemResult `json:"results"`
}

// idemResult is what one write interaction (a create, an entry) did: its
// status and the version it wrote or matched.
type idemResult struct {
	N       int    `json:"n"` // entry index; -1 for a single interaction
	Status  int    `json:"status"`
	Type    string `json:"type,omitempty"`
	ID      string `json:"id,omitempty"`
	Version int64  `json:"version,omitempty"`
	Wrote   bool   `json:"wrote,omitempty"`
	Minimal bool   `json:"minimal,omitempty"`
}

// idemScope is one request's key, carried in its context.
type idemScope struct {
	kv   storage.KV
	key  string // KV key of the request's record
	hash string
	// stored holds the records found for the key when the request began:
	// "" for the request's own (a transaction, a create), the entry index
	// for a batch's entries.
	stored map[string]idemRecord
	// marks is the pending record of the current attempt; puts lists
	// records to store after the Commit when the backend could not store
	// them in it.
	marks *commitMarks
	later []storage.KVPut
}

type idemKey struct{}

func idemFrom(ctx context.Context) *idemScope {
	sc, _ := ctx.Value(idemKey{}).(*idemScope)
	return sc
}

// load reads the records of the key and checks they belong to this request.
func (sc *idemScope) load(ctx context.Context) error {
	keys, err := sc.kv.List(ctx, sc.key)
	if err != nil {
		return fmt.Errorf("reading %s records: %w", IdempotencyHeader, err)
	}
	for _, k := range keys {
		sub, ok := strings.CutPrefix(k, sc.key)
		if !ok || (sub != "" && !strings.HasPrefix(sub, "/")) {
			continue
		}
		raw, err := sc.kv.Get(ctx, k)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %s records: %w", IdempotencyHeader, err)
		}
		var rec idemRecord
		if err := json.Unmarshal(raw, &rec); err != nil || rec.V != 1 {
			return fmt.Errorf("decoding the %s record %s: unknown encoding", IdempotencyHeader, k)
		}
		if rec.Hash != sc.hash {
			return newError(http.StatusUnprocessableEntity, codeBusiness,
				"this %s was already used for a different request; use a new key for a new request", IdempotencyHeader)
		}
		sc.stored[strings.TrimPrefix(sub, "/")] = rec
	}
	return nil
}

// entry returns the scope of entry n of a batch (nil without a key).
func (sc *idemScope) entry(ctx context.Context, n int) context.Context {
	if sc == nil {
		return ctx
	}
	es := *sc
	es.key = sc.key + "/" + strconv.Itoa(n)
	es.stored = map[string]idemRecord{}
	if rec, ok := sc.stored[strconv.Itoa(n)]; ok {
		es.stored[""] = rec
	}
	es.marks, es.later = nil, nil
	return context.WithValue(ctx, idemKey{}, &es)
}

// replay is the stored answer of this scope's request, if any.
func (sc *idemScope) replay() (idemRecord, bool) {
	if sc == nil {
		return idemRecord{}, false
	}
	rec, ok := sc.stored[""]
	return rec, ok
}

// markIdempotent is called just before the Commit of a request's change
// with what the change does; the record goes into that Commit. It returns
// the context to commit with. Each attempt (a retried plan) marks afresh.
func markIdempotent(ctx context.Context, results []idemResult) context.Context {
	sc := idemFrom(ctx)
	if sc == nil {
		return ctx
	}
	raw, _ := json.Marshal(idemRecord{V: 1, Hash: sc.hash, Results: results})
	put := storage.KVPut{Key: sc.key, Value: raw, TTL: idemTTL}
	mctx, m := withCommitMarks(ctx, []storage.KVPut{put})
	sc.marks = m
	sc.later = []storage.KVPut{put}
	return mctx
}

// settle stores the record after a successful change when the backend
// could not put it in the Commit itself (not a storage.KVCommitter): a
// crash between the two then loses the record, which is the most a
// backend without KV commits allows.
func (s *Server) settle(ctx context.Context) {
	sc := idemFrom(ctx)
	if sc == nil || sc.marks == nil || sc.marks.wasStored() {
		return
	}
	for _, p := range sc.later {
		if err := sc.kv.Put(context.WithoutCancel(ctx), p.Key, p.Value, p.TTL); err != nil {
			s.log.WarnContext(ctx, "storing the Idempotency-Key record", "err", err)
		}
	}
	sc.marks = nil
}

// replayed rebuilds the result of one stored interaction from the version
// it wrote or matched.
func (s *Server) replayed(ctx context.Context, method string, r idemResult) (WriteResult, error) {
	out := WriteResult{Method: method, Status: r.Status, Wrote: r.Wrote, Minimal: r.Minimal,
		Diagnostics: fmt.Sprintf("replayed the answer to an earlier request with this %s", IdempotencyHeader)}
	if r.ID == "" || r.Version == 0 {
		return out, nil
	}
	rec, err := s.backend.ReadVersion(ctx, r.Type, r.ID, r.Version)
	if err != nil {
		return out, fmt.Errorf("reading %s/%s version %d for an %s replay: %w", r.Type, r.ID, r.Version, IdempotencyHeader, err)
	}
	out.Rec = rec
	return out, nil
}

// txResults is what the planned entries of a transaction (or of a
// conditional write run as one) will have done once committed.
func txResults(entries []*txEntry) []idemResult {
	var out []idemResult
	for _, e := range entries {
		if e.reads() {
			continue
		}
		r := idemResult{N: e.n, Status: e.status, Type: e.rec.Type, ID: e.rec.ID, Version: e.rec.VersionID, Minimal: e.minimal}
		if e.write != nil {
			r.Type, r.ID, r.Version, r.Wrote = e.write.Type, e.write.ID, e.write.VersionID, true
		}
		out = append(out, r)
	}
	return out
}

// replayTransaction answers a transaction whose change an earlier copy
// of the request committed: the write entries from the record, the reads
// run again (they change nothing).
func (s *Server) replayTransaction(ctx context.Context, entries []*txEntry, rec idemRecord, ret string) (bundleResult, error) {
	byN := map[int]idemResult{}
	for _, r := range rec.Results {
		byN[r.N] = r
	}
	out := bundleResult{typ: "transaction-response", entries: make([]entryResult, len(entries))}
	for i, e := range entries {
		if e.reads() {
			out.entries[i] = s.readEntry(ctx, e)
			continue
		}
		r, ok := byN[i]
		if !ok {
			return bundleResult{}, newError(http.StatusUnprocessableEntity, codeBusiness,
				"the %s record has no answer for entry %d: the key was used for a different request", IdempotencyHeader, i)
		}
		wr, err := s.replayed(ctx, e.method, r)
		if err != nil {
			return bundleResult{}, err
		}
		we, err := s.writeEntry(ctx, wr, ret)
		if err != nil {
			return bundleResult{}, err
		}
		out.entries[i] = entryResult{entry: we}
	}
	return out, nil
}

// batchEntry runs write entry i of a batch under its own key record: an
// entry an earlier copy of the batch committed is answered from its
// record, any other one runs.
func (s *Server) batchEntry(ctx context.Context, i int, e *txEntry, ret string) entryResult {
	ectx := idemFrom(ctx).entry(ctx, i)
	rec, ok := idemFrom(ectx).replay()
	if !ok {
		res := s.batchWrite(ectx, e, ret)
		if res.err == nil {
			s.settle(ectx)
		}
		return res
	}
	actx, audited := auth.AuditEntry(ctx, e.method, e.typ)
	var res entryResult
	status := http.StatusOK
	if len(rec.Results) != 1 {
		res, status = s.failed(actx, entryError(e, fmt.Errorf("the %s record of entry %d holds %d answers", IdempotencyHeader, i, len(rec.Results))))
	} else if wr, err := s.replayed(actx, e.method, rec.Results[0]); err != nil {
		res, status = s.failed(actx, entryError(e, err))
	} else if we, err := s.writeEntry(actx, wr, ret); err != nil {
		res, status = s.failed(actx, entryError(e, err))
	} else {
		res, status = entryResult{entry: we}, wr.Status
	}
	audited(status)
	return res
}

// IdempotencyRequest is what an Idempotency-Key covers of one request:
// the key, and what identifies the request (a key reused with another
// request is refused).
type IdempotencyRequest struct {
	Key    string // the Idempotency-Key header; "" for none
	Method string
	// Target is the request's path with its query when it has one (the
	// criteria of a conditional update or delete), so that one key cannot
	// replay the answer of other criteria.
	Target      string
	IfNoneExist string
	IfMatch     string
	Body        []byte
}

// BeginIdempotent, when the request has a key, takes the key's lock and
// loads what an earlier copy of the request stored, into the returned
// context; release frees the lock. Without a key it returns ctx unchanged
// and a no-op release. A key reused with another request is a 422; a copy
// still running is a 409 with Retry-After.
func (s *Server) BeginIdempotent(ctx context.Context, r IdempotencyRequest) (context.Context, func(), error) {
	key := r.Key
	if key == "" {
		return ctx, func() {}, nil
	}
	if len(key) > maxIdemKey || strings.ContainsFunc(key, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		return ctx, nil, errBadRequest("the %s header must be 1 to %d printable ASCII characters", IdempotencyHeader, maxIdemKey)
	}
	var who string
	if p := auth.FromContext(ctx); p != nil {
		who = p.Issuer + "\x00" + p.ClientID + "\x00" + p.Subject
	}
	scope := sha256.Sum256([]byte(who + "\x00" + key))
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00", r.Method, r.Target, r.IfNoneExist)
	if m := r.IfMatch; m != "" {
		// Only when present, so that the hash of a request without it is
		// the one earlier versions stored.
		fmt.Fprintf(h, "if-match\x00%s\x00", m)
	}
	h.Write(r.Body)
	sc := &idemScope{
		kv: s.backend.KV(), key: idemPrefix + hex.EncodeToString(scope[:]),
		hash: hex.EncodeToString(h.Sum(nil)), stored: map[string]idemRecord{},
	}
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	lock, owner := idemLockPrefix+hex.EncodeToString(scope[:]), []byte(hex.EncodeToString(tok[:]))
	got, err := sc.kv.PutIfAbsent(ctx, lock, owner, idemLockTTL)
	if err != nil {
		return ctx, nil, fmt.Errorf("taking the %s lock: %w", IdempotencyHeader, err)
	}
	if !got {
		e := newError(http.StatusConflict, codeConflict, "a request with this %s is still being processed; retry shortly", IdempotencyHeader)
		e.Header = http.Header{"Retry-After": {"1"}}
		return ctx, nil, e
	}
	release := func() {
		// The request's own context may be cancelled (client gone): the
		// lock is released all the same.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := sc.kv.CompareAndDelete(rctx, lock, owner); err != nil {
			s.log.WarnContext(rctx, "releasing the Idempotency-Key lock (it expires by itself)", "err", err)
		}
	}
	if err := sc.load(ctx); err != nil {
		release()
		return ctx, nil, err
	}
	return context.WithValue(ctx, idemKey{}, sc), release, nil
}

// KeyedWrite runs one write interaction (create, update, patch, delete,
// conditional forms) under the key BeginIdempotent put on ctx: a copy of a
// request whose change is recorded gets the first answer and writes
// nothing; any other request runs, its record going into the Commit of
// its change.
func (s *Server) KeyedWrite(ctx context.Context, method string, run func(context.Context) (WriteResult, error)) (WriteResult, error) {
	if rec, ok := idemFrom(ctx).replay(); ok && len(rec.Results) == 1 {
		return s.replayed(ctx, method, rec.Results[0])
	}
	r, err := run(ctx)
	if err == nil {
		s.settle(ctx)
	}
	return r, err
}
