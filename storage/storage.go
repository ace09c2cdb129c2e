// Package storage is the contract between Anodyne's FHIR layer and its
// databases: versioned JSON documents written with compare-and-set, their
// history, the search index entries extracted from them, queries over those
// entries, and small keyed records with expiry for authorization state.
//
// It owns no FHIR semantics. It does not know what a Patient is, how a
// search parameter is extracted, or what a Bundle means: the fhir and
// resources packages decide all of that once, above this interface, and hand
// the backends plain records (raw JSON, metadata, index entries) and plain
// expressions (see expr.go). Each backend (storage/sqlite, storage/mongo)
// translates those into its own query language and must pass the shared
// conformance suite in storage/storagetest.
//
// Every method takes a context. Errors are values: the sentinels below have
// documented meanings that callers test with errors.Is.
//
// It imports no other Anodyne package, and its backends import only it:
// everything else points down at storage (layering_test.go at the module
// root holds that). The expression tree's stored form (exprcodec.go) lives
// here, next to the tree, for the same reason.
package storage

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors. Backends wrap them with context (fmt.Errorf("...: %w", ErrX)).
var (
	// ErrNotFound: no resource with that type and id has ever been written,
	// or the requested version does not exist, or a KV key is absent/expired.
	ErrNotFound = errors.New("storage: not found")
	// ErrVersionConflict: a Write's ExpectVersion did not match the current
	// version of the resource (optimistic locking failed). Nothing was written.
	ErrVersionConflict = errors.New("storage: version conflict")
	// ErrDuplicateClaim: a Write's Claim is already held by another live
	// resource (conditional create raced with an identical one). Nothing was written.
	ErrDuplicateClaim = errors.New("storage: claim already held")
	// ErrUnsupported: the backend cannot evaluate this request (an expression
	// node, a sort, an atomic multi-write on a deployment without
	// transactions). It must never answer such a request with a silent partial result.
	ErrUnsupported = errors.New("storage: unsupported")
	// ErrBadCursor: a paging cursor was not produced by this backend for this query.
	ErrBadCursor = errors.New("storage: invalid cursor")
	// ErrUnavailable: the database could not be reached in time (network
	// error, no server selectable, lock wait exceeded). Nothing was
	// written; the same call may succeed later, without a restart.
	ErrUnavailable = errors.New("storage: database unavailable")
	// ErrFull: the database has no room for the write (disk full, size
	// cap reached). Nothing was written; it succeeds once space is freed.
	ErrFull = errors.New("storage: database full")
)

// Record is one version of one resource as stored.
type Record struct {
	Type        string    // resource type, e.g. "Observation"
	ID          string    // logical id
	VersionID   int64     // 1, 2, 3 … assigned by the caller, checked by the backend
	LastUpdated time.Time // set by the caller; stored with at least millisecond precision
	Deleted     bool      // a delete is a version with Deleted=true and no JSON
	// Method is the interaction that produced this version: "POST", "PUT",
	// "PATCH" or "DELETE" (history Bundles report it in entry.request.method).
	Method string
	// JSON is the resource exactly as it will be served, meta included.
	// Backends store and return these bytes unchanged.
	JSON []byte
	// Seq is a backend-assigned, strictly increasing number over all writes
	// of the store (commit order), used to order system history. Zero in Write.
	Seq int64
}

// Write asks a backend to store a new version of a resource.
type Write struct {
	Record
	// ExpectVersion is compare-and-set: the write succeeds only if the
	// current version of Type/ID is exactly this (0: the resource must not
	// exist yet, not even as deleted). Otherwise ErrVersionConflict.
	// The caller sets Record.VersionID = ExpectVersion+1.
	ExpectVersion int64
	// Index holds the search index entries of this version. They replace the
	// resource's previous entries; a delete carries none.
	Index []Entry
	// Claim, when non-empty, is a key that must be unique among current,
	// non-deleted resources of the store (for example a hash of a
	// conditional-create query). A delete releases the resource's claim.
	Claim string
	// Events are appended to the outbox (see Outbox) in the same Commit,
	// each taking this write's Seq.
	Events []Event
}

// Backend is what every database behind Anodyne implements.
type Backend interface {
	// Commit applies writes atomically: either every write is stored (and
	// durable when Commit returns nil) or none is. The returned records carry
	// their assigned Seq. A backend that cannot make several writes atomic
	// returns ErrUnsupported for len(writes) > 1 and never writes a part.
	Commit(ctx context.Context, writes ...Write) ([]Record, error)

	// Read returns the current version of a resource, which may be a delete
	// (Record.Deleted). ErrNotFound when it never existed.
	Read(ctx context.Context, typ, id string) (Record, error)
	// ReadVersion returns one version. ErrNotFound when it does not exist.
	ReadVersion(ctx context.Context, typ, id string, version int64) (Record, error)

	// History lists versions, newest first (by Seq), filtered by the request.
	History(ctx context.Context, req HistoryRequest) (Page, error)

	// Search evaluates a query over the index entries of current,
	// non-deleted resources.
	Search(ctx context.Context, q Query) (Page, error)

	// KV gives small keyed records with expiry, for authorization state,
	// job state and similar bookkeeping.
	KV() KV

	// Ping checks that the database is reachable (for /readyz).
	Ping(ctx context.Context) error
	// Close releases resources. Writes acknowledged before Close are durable.
	Close() error
}

// KVPut is a KV record to store with a Commit (see KVCommitter).
type KVPut struct {
	Key   string
	Value []byte
	TTL   time.Duration // <= 0: no expiry
}

// KVCommitter is implemented by backends that can store KV records in the
// same atomic Commit as resource writes, so that bookkeeping describing
// the writes (an import's checkpoint: "these units are stored") can never
// disagree with them, whatever the moment of a crash. Either every write
// and every put is stored, or none; the errors are Commit's. With no
// writes it stores the puts alone.
type KVCommitter interface {
	CommitWithKV(ctx context.Context, puts []KVPut, writes ...Write) ([]Record, error)
}

// Reindexer is implemented by backends that can replace the index entries
// of a stored version in place, without writing a new version; the server
// uses it to make a SearchParameter created at runtime searchable over
// existing resources. It returns ErrVersionConflict when version is not
// the current version of Type/ID (a newer write already carries entries
// extracted with the new parameter) and ErrNotFound when the resource is
// absent or deleted.
type Reindexer interface {
	Reindex(ctx context.Context, typ, id string, version int64, index []Entry) error
}

// ExpirySweeper is implemented by backends whose expired KV records stay
// stored until something removes them (MongoDB without a TTL index:
// FerretDB); reads already treat them as absent. SweepExpired removes up
// to limit expired records, atomically against the conditional calls on
// each, and reports how many it removed. It is safe to run from several
// processes at once; the server runs it under one lease so that one does.
type ExpirySweeper interface {
	SweepExpired(ctx context.Context, limit int) (int, error)
}

// Capabilities describes what a backend deployment can do; the server uses
// it to avoid claiming what it does not have (CapabilityStatement, transactions).
type Capabilities struct {
	Name string // "sqlite", "mongodb", "ferretdb"
	// AtomicCommit: Commit with several writes is all-or-nothing.
	AtomicCommit bool
	// Notes are human-readable remarks on degraded paths (shown in logs and tests).
	Notes []string
	// Deployment, for operators (start-up log, /readyz): the server's
	// version, its topology ("standalone", "replicaSet", "sharded",
	// "embedded") and whether it has multi-document transactions.
	Version      string
	Topology     string
	Transactions bool
}

// Describer is implemented by backends that report their capabilities.
type Describer interface {
	Capabilities(ctx context.Context) Capabilities
}

// HistoryRequest selects versions for instance, type or system history.
type HistoryRequest struct {
	Type string // empty: every type (system history)
	ID   string // with Type: instance history
	// Since keeps versions with LastUpdated >= Since (zero: no bound).
	Since time.Time
	// At keeps, per resource, the version current at that instant (zero: off).
	At time.Time
	// Before keeps versions with LastUpdated < Before (zero: no bound); used
	// to pin a sync feed to a stable upper bound.
	Before time.Time
	Count  int    // page size; the backend may cap it
	Cursor string // opaque, from Page.Next; empty for the first page

	// Filter, when not nil, keeps only the versions whose own index
	// entries match it, with the meaning of Matches: the entries that
	// came with that version's Write (or a later Reindex of it), not the
	// resource's current ones, so that a version stays attributable to
	// whoever could see it when it was written. A delete carries no
	// entries of its own; the backend keeps a copy of the entries of the
	// version it deletes, and the delete matches through them. Paging
	// runs over the matching versions only: a page is short only when it
	// is the last, and Next is empty when no match follows. A version a
	// backend stored without entries (before it kept them) never matches.
	// Chain and Has answer ErrUnsupported (they would judge an old
	// version by other resources' current state).
	Filter Expr
	// TypeFilters, for system history (Type empty) only, keeps the
	// versions of the listed types alone, each filtered by its own
	// expression as Filter would (nil: every version of that type): what
	// a caller whose access differs per type may see, in one pass. A nil
	// map keeps every type; Filter, when also set, applies on top. Setting
	// it together with Type is an error.
	TypeFilters map[string]Expr
}

// Page is one page of records.
type Page struct {
	Records []Record
	// Next is an opaque cursor for the following page; empty when none.
	Next string
	// Total is the number of matches when the query asked for it, else -1.
	Total int64
}

// KV is a small keyed store with expiry. Keys are namespaced by the caller
// ("auth/code/<hash>"). Expired records behave as absent.
type KV interface {
	// Put stores value under key. ttl <= 0 means no expiry.
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// PutIfAbsent stores value only when key is absent or expired; it reports
	// whether it stored. It is atomic: two concurrent callers cannot both win.
	PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
	// Get returns ErrNotFound for an absent or expired key.
	Get(ctx context.Context, key string) ([]byte, error)
	// Take reads and deletes atomically (single-use codes). ErrNotFound when absent.
	Take(ctx context.Context, key string) ([]byte, error)
	Delete(ctx context.Context, key string) error
	// List returns the live keys starting with prefix, in key order.
	List(ctx context.Context, prefix string) ([]string, error)
	// CompareAndSwap replaces the value of key with new, and its expiry
	// with ttl (<= 0: none), only when key is live and holds exactly old;
	// it reports whether it replaced. It is atomic against every other
	// conditional call on the key (CompareAndSwap, CompareAndDelete,
	// PutIfAbsent over an expired record): of several callers comparing
	// against the same value, at most one wins. An absent or expired key
	// never matches. False means exactly that the key did not hold old or
	// that another caller's change won, never that a change was in flight:
	// an implementation that locks waits for the holder's outcome (callers
	// take false as "someone else changed it" and stop their work). The
	// unconditional Put, Delete and Take are not ordered against it: a key
	// shared with them has no defined winner.
	CompareAndSwap(ctx context.Context, key string, old, new []byte, ttl time.Duration) (bool, error)
	// CompareAndDelete deletes key only when it is live and holds exactly
	// old, atomically as CompareAndSwap; it reports whether it deleted.
	CompareAndDelete(ctx context.Context, key string, old []byte) (bool, error)
}

// Unwrapper is implemented by a Backend that wraps another one (metrics,
// tracing), so that callers still find the inner backend's optional
// interfaces with As.
type Unwrapper interface {
	Unwrap() Backend
}

// As reports whether b, or a backend it wraps (through Unwrapper), is a
// T, and returns that one. Optional interfaces (Describer, Reindexer) are
// looked up with As, never with a type assertion on the outer backend.
func As[T any](b Backend) (T, bool) {
	for b != nil {
		if t, ok := b.(T); ok {
			return t, true
		}
		u, ok := b.(Unwrapper)
		if !ok {
			break
		}
		b = u.Unwrap()
	}
	var zero T
	return zero, false
}

// IsAnswer reports whether err is one of the sentinel errors that answer a
// call rather than report a failure (not found, version conflict, claim
// held), for instrumentation that counts failures.
func IsAnswer(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrVersionConflict) || errors.Is(err, ErrDuplicateClaim)
}
