// Package storagetest is the conformance suite that every storage.Backend
// runs: storagetest.Run(t, harness) exercises the whole contract written in
// storage/storage.go and storage/expr.go (compare-and-set commits, claims,
// history, every expression node on every kind, sorting, paging, totals,
// the KV store, durability across a reopen and context cancellation) and,
// for backends that implement them, storage.Reindexer, storage.Outbox,
// storage.KVCommitter and storage.Aggregator.
//
// It knows only the storage package. It must not know any concrete backend
// (backends import it from their tests, never the reverse) and it must not
// know FHIR: the records it writes are small opaque JSON documents and the
// index entries are written by hand, the way the resources package would
// hand them to a backend.
//
// Semantics the suite pins down where the contract leaves room:
//   - Cmp on string fields compares bytes (no collation, case-sensitive);
//     Prefix and Contains are byte-wise too. Text is already normalized by
//     the indexer, so the backend must not fold case itself.
//   - Sort keys by kind: string Text, token Code, uri Exact, reference
//     "RefType/RefID" (or RefURL when RefType is empty), date Low
//     (ascending, lowest value) / High (descending, highest value), number
//     and quantity Num. Resources with no value sort last in both
//     directions; ties are broken by type then id, ascending.
//   - HistoryRequest.At keeps, per resource, the newest version whose
//     LastUpdated <= At.
//   - Page.Total is -1 unless Query.Total was set.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Harness tells the suite how to obtain stores.
type Harness struct {
	// New returns a new, empty store for one subtest. The suite closes it.
	New func(t *testing.T) storage.Backend
	// Reopen opens the data of old again, as a restarted process would. The
	// suite has already closed old when it calls Reopen, and closes the
	// returned store itself. Nil skips the durability cases.
	Reopen func(t *testing.T, old storage.Backend) storage.Backend
	// AllowUnsupported lets a backend answer a search case with
	// storage.ErrUnsupported (for a deployment that cannot evaluate some
	// node); the case is then skipped with a log line instead of failing.
	// A backend that claims full support leaves it false, so that an
	// ErrUnsupported answer is a failure.
	AllowUnsupported bool
}

// testCase is one self-contained subtest: it receives a fresh store.
type testCase struct {
	name string
	fn   func(t *testing.T, e *env)
}

// Run runs the whole conformance suite, each case on a fresh store.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("storagetest: Harness.New is nil")
	}
	groups := []struct {
		name  string
		cases []testCase
	}{
		{"Commit", commitCases},
		{"Claim", claimCases},
		{"History", historyCases},
		{"FilteredHistory", filteredHistoryCases},
		{"Search", searchCases},
		{"Sort", sortCases},
		{"Paging", pagingCases},
		{"Reindex", reindexCases},
		{"KV", kvCases},
		{"Outbox", outboxCases},
		{"KVCommit", kvCommitCases},
		{"Aggregate", aggregateCases},
		{"Durability", durabilityCases},
		{"Context", contextCases},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, c := range g.cases {
				t.Run(c.name, func(t *testing.T) {
					e := newEnv(t, h)
					c.fn(t, e)
				})
			}
		})
	}
}

// env is the per-subtest fixture: a store, a deterministic clock and helpers
// that fail the test on unexpected errors.
type env struct {
	t     *testing.T
	h     Harness
	b     storage.Backend
	ctx   context.Context
	clock time.Time
}

func newEnv(t *testing.T, h Harness) *env {
	b := h.New(t)
	if b == nil {
		t.Fatal("storagetest: Harness.New returned nil")
	}
	e := &env{t: t, h: h, b: b, ctx: t.Context(), clock: time.Date(2024, 3, 1, 8, 0, 0, 0, time.UTC)}
	t.Cleanup(func() {
		if e.b != nil {
			if err := e.b.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	})
	if d, ok := b.(storage.Describer); ok {
		c := d.Capabilities(e.ctx)
		if c.Name == "" {
			t.Errorf("Capabilities().Name is empty")
		}
	}
	return e
}

// reopen closes the store and opens its data again.
func (e *env) reopen() {
	e.t.Helper()
	old := e.b
	e.b = nil
	if err := old.Close(); err != nil {
		e.t.Fatalf("Close before reopen: %v", err)
	}
	nb := e.h.Reopen(e.t, old)
	if nb == nil {
		e.t.Fatal("Harness.Reopen returned nil")
	}
	e.b = nb
}

func (e *env) atomic() bool {
	d, ok := e.b.(storage.Describer)
	return !ok || d.Capabilities(e.ctx).AtomicCommit
}

// tick advances the fixture clock by one second and returns it.
func (e *env) tick() time.Time {
	e.clock = e.clock.Add(time.Second)
	return e.clock
}

func body(typ, id string, version int64) []byte {
	return fmt.Appendf(nil, `{"resourceType":%q,"id":%q,"meta":{"versionId":"%d"}}`, typ, id, version)
}

// write builds the next version of typ/id after expect.
func (e *env) write(typ, id string, expect int64, idx ...storage.Entry) storage.Write {
	method := "PUT"
	if expect == 0 {
		method = "POST"
	}
	return storage.Write{
		Record: storage.Record{
			Type: typ, ID: id, VersionID: expect + 1, LastUpdated: e.tick(),
			Method: method, JSON: body(typ, id, expect+1),
		},
		ExpectVersion: expect,
		Index:         idx,
	}
}

func (e *env) deletion(typ, id string, expect int64) storage.Write {
	return storage.Write{
		Record: storage.Record{
			Type: typ, ID: id, VersionID: expect + 1, LastUpdated: e.tick(),
			Method: "DELETE", Deleted: true,
		},
		ExpectVersion: expect,
	}
}

func (e *env) commit(ws ...storage.Write) []storage.Record {
	e.t.Helper()
	recs, err := e.b.Commit(e.ctx, ws...)
	if err != nil {
		e.t.Fatalf("Commit(%s): %v", writeNames(ws), err)
	}
	if len(recs) != len(ws) {
		e.t.Fatalf("Commit returned %d records for %d writes", len(recs), len(ws))
	}
	return recs
}

func writeNames(ws []storage.Write) string {
	n := make([]string, len(ws))
	for i, w := range ws {
		n[i] = fmt.Sprintf("%s/%s v%d", w.Type, w.ID, w.VersionID)
	}
	return strings.Join(n, ", ")
}

// current returns the current version number of typ/id, 0 when it never existed.
func (e *env) current(typ, id string) int64 {
	e.t.Helper()
	r, err := e.b.Read(e.ctx, typ, id)
	if errors.Is(err, storage.ErrNotFound) {
		return 0
	}
	if err != nil {
		e.t.Fatalf("Read(%s/%s): %v", typ, id, err)
	}
	return r.VersionID
}

// put creates or updates typ/id with the given index entries.
func (e *env) put(typ, id string, idx ...storage.Entry) storage.Record {
	e.t.Helper()
	return e.commit(e.write(typ, id, e.current(typ, id), idx...))[0]
}

// del deletes typ/id.
func (e *env) del(typ, id string) storage.Record {
	e.t.Helper()
	return e.commit(e.deletion(typ, id, e.current(typ, id)))[0]
}

// search runs q; an ErrUnsupported answer skips the case when the harness allows it.
func (e *env) search(q storage.Query) storage.Page {
	e.t.Helper()
	p, err := e.b.Search(e.ctx, q)
	if err != nil {
		e.unsupported(e.t, err, "Search(%v)", q.Filter)
		e.t.Fatalf("Search(types=%v filter=%v sort=%v): %v", q.Types, q.Filter, q.Sort, err)
	}
	return p
}

func (e *env) unsupported(t *testing.T, err error, format string, args ...any) {
	t.Helper()
	if e.h.AllowUnsupported && errors.Is(err, storage.ErrUnsupported) {
		t.Skipf("backend reports unsupported for %s: %v", fmt.Sprintf(format, args...), err)
	}
}

// searchAll follows the cursor from page to page and returns every "Type/id".
func (e *env) searchAll(q storage.Query) []string {
	e.t.Helper()
	var out []string
	for range 1000 {
		p := e.search(q)
		if len(p.Records) > q.Count && q.Count > 0 {
			e.t.Fatalf("page of %d records for Count=%d", len(p.Records), q.Count)
		}
		out = append(out, refs(p.Records)...)
		if p.Next == "" {
			return out
		}
		q.Cursor = p.Next
	}
	e.t.Fatal("search paging did not end after 1000 pages")
	return nil
}

func (e *env) history(req storage.HistoryRequest) []storage.Record {
	e.t.Helper()
	var out []storage.Record
	for range 1000 {
		p, err := e.b.History(e.ctx, req)
		if err != nil {
			e.t.Fatalf("History(%+v): %v", req, err)
		}
		out = append(out, p.Records...)
		if p.Next == "" {
			return out
		}
		req.Cursor = p.Next
	}
	e.t.Fatal("history paging did not end after 1000 pages")
	return nil
}

func refs(rs []storage.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Type + "/" + r.ID
	}
	return out
}

func versions(rs []storage.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = fmt.Sprintf("%s/%s/%d", r.Type, r.ID, r.VersionID)
	}
	return out
}

func wantErr(t *testing.T, err, want error, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func wantList(t *testing.T, got, want []string, what string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n got  %q\n want %q", what, got, want)
	}
}

func ms(s string) int64 {
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(fmt.Sprintf("storagetest: bad fixture time %q: %v", s, err))
	}
	return tm.UnixMilli()
}

// Entry constructors keep the fixtures readable.

func str(param, exact string) storage.Entry {
	return storage.Entry{Param: param, Kind: storage.KindString, Text: strings.ToLower(exact), Exact: exact}
}

func tok(param, system, code, text string) storage.Entry {
	return storage.Entry{Param: param, Kind: storage.KindToken, System: system, Code: code, Text: text}
}

func ref(param, typ, id string) storage.Entry {
	return storage.Entry{Param: param, Kind: storage.KindReference, RefType: typ, RefID: id}
}

func date(param, low, high string) storage.Entry {
	return storage.Entry{Param: param, Kind: storage.KindDate, Low: ms(low), High: ms(high)}
}

func num(param string, v, lo, hi float64) storage.Entry {
	return storage.Entry{Param: param, Kind: storage.KindNumber, Num: v, NumLow: lo, NumHigh: hi}
}

func qty(param string, v float64, system, code string) storage.Entry {
	return storage.Entry{Param: param, Kind: storage.KindQuantity, Num: v, NumLow: v - 0.05, NumHigh: v + 0.05, System: system, Code: code}
}

func uri(param, u string) storage.Entry {
	return storage.Entry{Param: param, Kind: storage.KindURI, Exact: u}
}

func comp(param string, parts ...storage.Entry) storage.Entry {
	return storage.Entry{Param: param, Kind: storage.KindComposite, Parts: parts}
}

func match(param string, k storage.Kind, cond storage.Expr) storage.Match {
	return storage.Match{Param: param, Kind: k, Cond: cond}
}

func cmp(f storage.Field, op storage.Op, v any) storage.Cmp {
	return storage.Cmp{Field: f, Op: op, Value: v}
}

func and(es ...storage.Expr) storage.And { return storage.And{Exprs: es} }
func or(es ...storage.Expr) storage.Or   { return storage.Or{Exprs: es} }
