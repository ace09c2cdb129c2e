package fhir

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

// The transaction engine (http.html#transaction). A transaction is
// planned completely before anything is written: every resource is
// validated, every conditional is resolved by search, every urn:uuid and
// conditional reference is rewritten, every entry is authorized, and the
// resulting writes go to the database in ONE storage Commit, which is
// all-or-nothing on every backend (storage.Backend.Commit). Any failure
// before or during that commit fails the whole transaction and leaves
// nothing behind. GET entries are evaluated after the commit, so that they
// read the transaction's own writes.
//
// The single-resource conditional interactions (If-None-Exist, PUT and
// DELETE by search) run through the same engine as transactions of one
// entry, so that the 0/1/many rules and the claim that makes conditional
// creates safe under concurrency exist once.

// txEntry is one entry of a transaction (or one conditional interaction).
type txEntry struct {
	n      int    // position in the Bundle; -1 for a plain interaction
	method string // GET, HEAD, POST, PUT, PATCH, DELETE
	url    string // request.url as written, for messages
	typ    string
	id     string     // from "Type/id"
	query  url.Values // conditional criteria of PUT/DELETE "Type?…"
	target string     // GET/HEAD and operations: the relative URL to evaluate
	// op: a POSTed operation ([type/[id/]]$name), run as a read of its
	// parameters (raw, a Parameters resource) or of the resource it
	// works on ($validate); it writes nothing.
	op bool
	// fullURL identifies the entry's resource inside the Bundle.
	fullURL string
	raw     []byte // the resource as posted (POST/PUT; Binary for PATCH)

	ifMatch         int64
	ifNoneExist     string
	ifNoneMatch     string
	ifModifiedSince string

	res   map[string]any // validated resource, rewritten in place
	resID string         // id in the body
	patch jsonpatch.Patch
	// minimal: the caller may write but not read the target (u without
	// r), so its response entry carries no resource.
	minimal bool
	// dirty: res was rewritten by a previous attempt and must be decoded
	// again from raw before the next one.
	dirty bool
	newID string // server-assigned id, stable across attempts

	// Decided by plan.
	claim    string
	write    *storage.Write
	writeIdx int // position of write in the Commit
	wrote    bool
	status   int
	rec      storage.Record // the version written, or the one matched or deleted
}

func (e *txEntry) label() string {
	if e.n < 0 {
		return ""
	}
	return fmt.Sprintf("entry %d (%s %s)", e.n, e.method, e.url)
}

// reads tells an entry that changes nothing (a read or an operation)
// from a write.
func (e *txEntry) reads() bool {
	return e.op || e.method == http.MethodGet || e.method == http.MethodHead
}

// entryError attributes a failure to a Bundle entry, keeping its status.
func entryError(e *txEntry, err error) error {
	if e.n < 0 || err == nil {
		return err
	}
	var fe *Error
	if errors.As(err, &fe) {
		out := &Error{Status: fe.Status, Header: fe.Header, cause: fe.cause}
		for _, is := range fe.Issues {
			is.Diagnostics = e.label() + ": " + is.Diagnostics
			if is.Expression == "" {
				is.Expression = fmt.Sprintf("Bundle.entry[%d]", e.n)
			}
			out.Issues = append(out.Issues, is)
		}
		return out
	}
	return fmt.Errorf("%s: %w", e.label(), err)
}

// transaction runs a transaction Bundle and answers the transaction-response.
func (s *Server) transaction(ctx context.Context, entries []*txEntry, ret string) (bundleResult, error) {
	if !s.atomicCommit(ctx) {
		e := newError(http.StatusNotImplemented, codeNotSupp,
			"this database deployment cannot commit several writes atomically, so transaction Bundles are refused; send a batch instead")
		e.cause = errNoAtomicCommit
		return bundleResult{}, e
	}
	if rec, ok := idemFrom(ctx).replay(); ok {
		return s.replayTransaction(ctx, entries, rec, ret)
	}
	if err := s.parseEntries(ctx, entries); err != nil {
		return bundleResult{}, err
	}
	if err := s.runTransaction(ctx, entries); err != nil {
		s.logTransaction(ctx, len(entries), err)
		return bundleResult{}, err
	}
	out := bundleResult{typ: "transaction-response", entries: make([]entryResult, len(entries))}
	for i, e := range entries {
		if e.reads() {
			out.entries[i] = s.readEntry(ctx, e)
			continue
		}
		we, err := s.writeEntry(ctx, WriteResult{Method: e.method, Status: e.status, Rec: e.rec, Wrote: e.wrote, Minimal: e.minimal}, ret)
		if err != nil {
			return bundleResult{}, err
		}
		out.entries[i] = entryResult{entry: we}
	}
	return out, nil
}

// runTransaction plans and commits the write entries, retrying the whole
// plan when a concurrent writer got in between (version conflict, claim
// taken): every decision is then taken again on fresh state, so an
// If-Match that no longer holds becomes a 412 and a conditional create
// that lost a race finds the winner.
func (s *Server) runTransaction(ctx context.Context, entries []*txEntry) error {
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		// A claim still refused after many fresh searches found nothing is
		// held by a resource that no longer matches its criteria (see
		// conditional.go); creating without it is then the only way forward.
		useClaims := attempt < maxWriteAttempts/2
		writes, err := s.plan(ctx, entries, useClaims)
		if err != nil {
			return err
		}
		if len(writes) == 0 {
			return nil
		}
		recs, err := s.commit(markIdempotent(ctx, txResults(entries)), writes)
		if errors.Is(err, storage.ErrVersionConflict) || errors.Is(err, storage.ErrDuplicateClaim) {
			if err := backoff(ctx, attempt); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("committing %d writes: %w", len(writes), err)
		}
		if len(recs) != len(writes) {
			return fmt.Errorf("committing %d writes: backend returned %d records", len(writes), len(recs))
		}
		for _, e := range entries {
			if e.write != nil {
				e.rec, e.wrote = recs[e.writeIdx], true
			}
		}
		return nil
	}
	return newError(http.StatusConflict, codeConflict, "the resources are being changed concurrently; retry")
}

// processing order of http.html#transaction: DELETE, POST, PUT/PATCH, GET.
func methodRank(m string) int {
	switch m {
	case http.MethodDelete:
		return 0
	case http.MethodPost:
		return 1
	case http.MethodPut, http.MethodPatch:
		return 2
	}
	return 3
}

// plan decides every write entry on the current state of the database
// and returns the writes to commit, in processing order.
func (s *Server) plan(ctx context.Context, entries []*txEntry, useClaims bool) ([]storage.Write, error) {
	order := make([]*txEntry, 0, len(entries))
	for _, e := range entries {
		if !e.reads() {
			order = append(order, e)
		}
	}
	slices.SortStableFunc(order, func(a, b *txEntry) int { return methodRank(a.method) - methodRank(b.method) })

	// Identities first: references anywhere in the Bundle may point to
	// any entry, whatever its processing order.
	refs := map[string]string{}
	owner := map[string]*txEntry{}
	claims := map[string]*txEntry{}
	for _, e := range order {
		e.claim, e.write, e.wrote, e.status, e.rec = "", nil, false, 0, storage.Record{}
		if e.method == http.MethodPatch {
			e.res = nil // the patched version of the previous attempt
		}
		if e.dirty {
			if err := s.redecode(e); err != nil {
				return nil, err
			}
		}
		if err := s.resolveIdentity(ctx, e, useClaims); err != nil {
			return nil, entryError(e, err)
		}
		if e.claim != "" {
			// Two creates on the same criteria in one transaction would
			// each see no match and both claim the key.
			if o, dup := claims[e.claim]; dup {
				return nil, entryError(e, errBadRequest("the same conditional criteria as %s; a transaction may create a resource for them once", o.label()))
			}
			claims[e.claim] = e
		}
		if e.id == "" {
			continue
		}
		key := e.typ + "/" + e.id
		if o, dup := owner[key]; dup {
			return nil, entryError(e, errBadRequest("%s is also the target of %s; a transaction may touch each resource once", key, o.label()))
		}
		owner[key] = e
		if e.fullURL != "" {
			refs[e.fullURL] = key
			// A fullUrl such as http://other/fhir/Patient/123 makes
			// "Patient/123" inside the Bundle mean this entry.
			if i := strings.LastIndex(e.fullURL, "/"+e.typ+"/"); i >= 0 && !strings.HasPrefix(e.fullURL, "urn:") {
				if alias := e.fullURL[i+1:]; alias != key {
					refs[alias] = key
				}
			}
		}
	}
	cond := map[string]string{} // conditional reference -> "Type/id"
	for _, e := range order {
		if e.res == nil || e.status != 0 {
			continue
		}
		e.dirty = true
		if err := s.rewriteRefs(ctx, e.res, refs, cond); err != nil {
			return nil, entryError(e, err)
		}
	}

	at := now()
	var writes []storage.Write
	for _, e := range order {
		if e.status != 0 { // decided without a write (matched, nothing to delete)
			continue
		}
		w, err := s.planWrite(ctx, e, at)
		if err != nil {
			return nil, entryError(e, err)
		}
		if w != nil {
			e.write, e.writeIdx = w, len(writes)
			writes = append(writes, *w)
		}
	}
	return writes, nil
}

// redecode restores an entry's resource as posted before a retry.
func (s *Server) redecode(e *txEntry) error {
	v, err := DecodeJSON(e.raw)
	if err != nil {
		return entryError(e, fmt.Errorf("decoding the resource again: %w", err))
	}
	m, ok := v.(map[string]any)
	if !ok {
		return entryError(e, errBadRequest("the resource is not a JSON object"))
	}
	e.res, e.dirty = m, false
	return nil
}

// resolveIdentity decides which resource an entry writes (e.id), or that
// it writes nothing (e.status set, e.rec the matched resource).
func (s *Server) resolveIdentity(ctx context.Context, e *txEntry, useClaims bool) error {
	switch e.method {
	case http.MethodPost:
		if e.ifNoneExist != "" {
			q, err := ConditionalParams(e.typ, e.ifNoneExist)
			if err != nil {
				return err
			}
			ms, err := s.matches(ctx, e.typ, q, 2)
			if err != nil {
				return err
			}
			switch len(ms) {
			case 0:
				if useClaims {
					e.claim = claimKey(e.typ, q)
				}
			case 1:
				e.status, e.rec, e.id = http.StatusOK, ms[0], ms[0].ID
				return nil
			default:
				return tooMany(e.typ, q)
			}
		}
		if e.newID == "" {
			e.newID = randomID()
		}
		e.id = e.newID
	case http.MethodPut, http.MethodDelete:
		if e.query == nil {
			return nil
		}
		ms, err := s.matches(ctx, e.typ, e.query, 2)
		if err != nil {
			return err
		}
		switch len(ms) {
		case 0:
			if e.method == http.MethodDelete {
				if _, err := s.decide(ctx, ActionDelete, e.typ); err != nil {
					return err
				}
				e.status, e.id = http.StatusNoContent, ""
				return nil
			}
			if useClaims {
				e.claim = claimKey(e.typ, e.query)
			}
			if e.resID == "" {
				if e.newID == "" {
					e.newID = randomID()
				}
				e.id = e.newID
				return nil
			}
			// http.html#cond-update: no match and an id in the body is an
			// update-as-create, unless that id is a live resource that
			// does not match the criteria.
			cur, exists, err := s.current(ctx, e.typ, e.resID)
			if err != nil {
				return err
			}
			if exists && !cur.Deleted {
				return newError(http.StatusConflict, codeConflict, "%s/%s exists but does not match the criteria", e.typ, e.resID)
			}
			e.id = e.resID
		case 1:
			if e.resID != "" && e.resID != ms[0].ID {
				return errBadRequest("the resource id %q differs from the id %q of the resource the criteria match", e.resID, ms[0].ID)
			}
			e.id = ms[0].ID
		default:
			return tooMany(e.typ, e.query)
		}
	}
	return nil
}

// planWrite builds the write of one entry whose target is decided, after
// the If-Match and authorization checks; nil when nothing is to be written.
func (s *Server) planWrite(ctx context.Context, e *txEntry, at time.Time) (*storage.Write, error) {
	var cur storage.Record
	exists := false
	if e.method != http.MethodPost {
		var err error
		if cur, exists, err = s.current(ctx, e.typ, e.id); err != nil {
			return nil, err
		}
		if e.ifMatch != 0 && (!exists || cur.VersionID != e.ifMatch) {
			return nil, preconditionFailed(e.ifMatch, cur, exists)
		}
	}
	live := exists && !cur.Deleted
	var old map[string]any
	if live {
		var err error
		if old, err = decodeRecord(cur); err != nil {
			return nil, err
		}
	}
	switch e.method {
	case http.MethodDelete:
		if !live {
			if _, err := s.decide(ctx, ActionDelete, e.typ); err != nil {
				return nil, err
			}
			e.status, e.rec = http.StatusNoContent, cur
			return nil, nil
		}
		if err := s.checkResource(ctx, ActionDelete, e.typ, e.id, old); err != nil {
			return nil, err
		}
		e.status = http.StatusNoContent
		return &storage.Write{
			Record: storage.Record{
				Type: e.typ, ID: e.id, VersionID: cur.VersionID + 1, LastUpdated: at,
				Deleted: true, Method: http.MethodDelete,
			},
			ExpectVersion: cur.VersionID,
		}, nil
	case http.MethodPatch:
		if !exists {
			return nil, errNotFound("%s/%s is not known", e.typ, e.id)
		}
		if cur.Deleted {
			return nil, s.gone(ctx, ActionUpdate, cur)
		}
		res, canRead, err := s.applyPatch(ctx, e.typ, e.id, e.patch, cur, old)
		if err != nil {
			return nil, err
		}
		e.minimal = !canRead
		if res == nil {
			e.status, e.rec = http.StatusOK, cur
			return nil, nil
		}
		e.res = res
	}
	action := ActionCreate
	if live {
		// Both the version replaced and the new one must be inside the
		// caller's access: a write cannot move a resource out of reach.
		if err := s.checkResource(ctx, ActionUpdate, e.typ, e.id, old); err != nil {
			return nil, err
		}
		action = ActionUpdate
	}
	w, err := s.prepare(e.typ, e.id, e.res, cur.VersionID, at, e.method)
	if err != nil {
		return nil, err
	}
	w.Claim = e.claim
	if err := s.checkEntries(ctx, action, e.typ, e.id, w.Index); err != nil {
		return nil, err
	}
	e.status = http.StatusCreated
	if live {
		e.status = http.StatusOK
	}
	return &w, nil
}

// rewriteRefs replaces, everywhere in a resource, references to Bundle
// entries (their fullUrl) by the resource's "Type/id", and conditional
// references ("Patient?identifier=…") by the one resource they match.
// A urn:uuid that is not the fullUrl of an entry cannot mean anything and
// is refused. urn:uuid values outside Reference.reference (uri fields
// naming an entry) become the entry's absolute URL.
func (s *Server) rewriteRefs(ctx context.Context, v any, refs, cond map[string]string) error {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			str, ok := val.(string)
			if !ok {
				if err := s.rewriteRefs(ctx, val, refs, cond); err != nil {
					return err
				}
				continue
			}
			if k == "reference" {
				to, err := s.resolveRef(ctx, str, refs, cond)
				if err != nil {
					return err
				}
				if to != "" {
					x[k] = to
				}
			} else if strings.HasPrefix(str, "urn:uuid:") {
				if to, ok := refs[str]; ok {
					x[k] = s.base + "/" + to
				}
			}
		}
	case []any:
		for i, val := range x {
			if str, ok := val.(string); ok {
				if to, ok := refs[str]; ok && strings.HasPrefix(str, "urn:uuid:") {
					x[i] = s.base + "/" + to
				}
				continue
			}
			if err := s.rewriteRefs(ctx, val, refs, cond); err != nil {
				return err
			}
		}
	}
	return nil
}

// resolveRef returns what a Reference.reference must become ("" to keep it).
func (s *Server) resolveRef(ctx context.Context, ref string, refs, cond map[string]string) (string, error) {
	if to, ok := refs[ref]; ok {
		return to, nil
	}
	if strings.HasPrefix(ref, "urn:uuid:") || strings.HasPrefix(ref, "urn:oid:") {
		return "", errBadRequest("reference %q names no entry of the Bundle", ref)
	}
	typ, query, ok := strings.Cut(ref, "?")
	if !ok || !conformance.IsResourceType(typ) {
		return "", nil
	}
	if to, ok := cond[ref]; ok {
		return to, nil
	}
	q, err := ConditionalParams(typ, query)
	if err != nil {
		return "", err
	}
	ms, err := s.matches(ctx, typ, q, 2)
	if err != nil {
		return "", err
	}
	if len(ms) != 1 {
		e := newError(http.StatusPreconditionFailed, codeNotFound,
			"conditional reference %q matches %d resources; it must match exactly one", ref, len(ms))
		if len(ms) == 0 {
			e.cause = errUnresolvedRef
		}
		return "", e
	}
	to := typ + "/" + ms[0].ID
	cond[ref] = to
	return to, nil
}

// logTransaction notes a refused transaction at debug level: the client
// gets the full OperationOutcome, operators only need the trace.
func (s *Server) logTransaction(ctx context.Context, entries int, err error) {
	s.log.DebugContext(ctx, "transaction refused", slog.Int("entries", entries), slog.Any("err", err))
}

// atomicCommit reports whether the backend makes a multi-write Commit
// all-or-nothing (a backend that does not say is assumed not to).
func (s *Server) atomicCommit(ctx context.Context) bool {
	if d, ok := storage.As[storage.Describer](s.backend); ok {
		return d.Capabilities(ctx).AtomicCommit
	}
	return false
}
