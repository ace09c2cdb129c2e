package storagetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

// reindexCases check storage.Reindexer: entries replaced in place, no new
// version, and no stale entries on a newer version. Each case skips on a
// backend that does not implement it.
var reindexCases = []testCase{
	{"ReplacesEntriesInPlace", reindexReplaces},
	{"StaleVersion", reindexStale},
	{"DeletedOrAbsent", reindexGone},
	{"ConcurrentCommit", reindexConcurrent},
}

func (e *env) reindexer(t *testing.T) storage.Reindexer {
	t.Helper()
	ri, ok := e.b.(storage.Reindexer)
	if !ok {
		t.Skipf("backend %T does not implement storage.Reindexer", e.b)
	}
	return ri
}

func codeIs(code string) storage.Match {
	return match("code", storage.KindToken, cmp(storage.FieldCode, storage.OpEq, code))
}

func reindexReplaces(t *testing.T, e *env) {
	ri := e.reindexer(t)
	before := e.put("Observation", "o1",
		tok("code", loinc, "old", ""),
		comp("combo", tok("", loinc, "old", ""), qty("", 1, ucum, "mg")))
	e.put("Observation", "o2", tok("code", loinc, "old", ""))
	sysBefore := versions(e.history(storage.HistoryRequest{Count: 100}))

	err := ri.Reindex(e.ctx, "Observation", "o1", before.VersionID, []storage.Entry{
		tok("code", loinc, "new", ""),
		str("note", "Fresh"),
		comp("combo", tok("", loinc, "new", ""), qty("", 2, ucum, "mg")),
	})
	if err != nil {
		t.Fatalf("Reindex: %v", err)
	}
	part := func(code string, v float64) storage.Expr {
		return match("combo", storage.KindComposite, and(
			storage.Part{Index: 0, Cond: cmp(storage.FieldCode, storage.OpEq, code)},
			storage.Part{Index: 1, Cond: cmp(storage.FieldNum, storage.OpEq, v)}))
	}
	for _, c := range []struct {
		name   string
		filter storage.Expr
		want   []string
	}{
		{"removed token", codeIs("old"), []string{"Observation/o2"}},
		{"new token", codeIs("new"), []string{"Observation/o1"}},
		{"new string", match("note", storage.KindString, cmp(storage.FieldExact, storage.OpEq, "Fresh")), []string{"Observation/o1"}},
		{"removed composite", part("old", 1), nil},
		{"new composite", part("new", 2), []string{"Observation/o1"}},
		{"every resource", nil, []string{"Observation/o1", "Observation/o2"}},
	} {
		got := e.searchAll(storage.Query{Types: []string{"Observation"}, Filter: c.filter, Count: 10})
		wantList(t, got, c.want, c.name)
	}

	after, err := e.b.Read(e.ctx, "Observation", "o1")
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if after.VersionID != before.VersionID || after.Seq != before.Seq || string(after.JSON) != string(before.JSON) {
		t.Errorf("after Reindex: v%d seq %d %s; want v%d seq %d %s", after.VersionID, after.Seq, after.JSON, before.VersionID, before.Seq, before.JSON)
	}
	inst := versions(e.history(storage.HistoryRequest{Type: "Observation", ID: "o1", Count: 100}))
	wantList(t, inst, []string{"Observation/o1/1"}, "instance history after Reindex")
	wantList(t, versions(e.history(storage.HistoryRequest{Count: 100})), sysBefore, "system history after Reindex")

	// An empty index leaves a resource that only unfiltered searches find.
	if err := ri.Reindex(e.ctx, "Observation", "o1", before.VersionID, nil); err != nil {
		t.Fatalf("Reindex to no entries: %v", err)
	}
	wantList(t, e.searchAll(storage.Query{Types: []string{"Observation"}, Filter: codeIs("new"), Count: 10}), nil, "after emptying")
	wantList(t, e.searchAll(storage.Query{Types: []string{"Observation"}, Count: 10}), []string{"Observation/o1", "Observation/o2"}, "every resource after emptying")
}

func reindexStale(t *testing.T, e *env) {
	ri := e.reindexer(t)
	e.put("Observation", "o1", tok("code", loinc, "v1", ""))
	e.put("Observation", "o1", tok("code", loinc, "v2", ""))
	for _, v := range []int64{1, 3} {
		err := ri.Reindex(e.ctx, "Observation", "o1", v, []storage.Entry{tok("code", loinc, "stale", "")})
		wantErr(t, err, storage.ErrVersionConflict, fmt.Sprintf("Reindex of version %d when 2 is current", v))
	}
	wantList(t, e.searchAll(storage.Query{Filter: codeIs("stale"), Count: 10}), nil, "stale entries")
	wantList(t, e.searchAll(storage.Query{Filter: codeIs("v2"), Count: 10}), []string{"Observation/o1"}, "current entries")
	if v := e.current("Observation", "o1"); v != 2 {
		t.Errorf("current version %d after a failed Reindex, want 2", v)
	}
}

func reindexGone(t *testing.T, e *env) {
	ri := e.reindexer(t)
	idx := []storage.Entry{tok("code", loinc, "ghost", "")}
	wantErr(t, ri.Reindex(e.ctx, "Observation", "never", 1, idx), storage.ErrNotFound, "Reindex of an absent resource")
	e.put("Observation", "gone", tok("code", loinc, "live", ""))
	del := e.del("Observation", "gone")
	wantErr(t, ri.Reindex(e.ctx, "Observation", "gone", del.VersionID, idx), storage.ErrNotFound, "Reindex of a deleted resource")
	wantList(t, e.searchAll(storage.Query{Filter: codeIs("ghost"), Count: 10}), nil, "entries of a deleted resource")
	wantList(t, e.searchAll(storage.Query{Types: []string{"Observation"}, Count: 10}), nil, "deleted resource")
	if h := e.history(storage.HistoryRequest{Type: "Observation", ID: "gone", Count: 10}); len(h) != 2 {
		t.Errorf("history has %v, want 2 versions", versions(h))
	}
	if _, err := e.b.Read(e.ctx, "Observation", "never"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Reindex created a resource: Read = %v", err)
	}
}

// reindexConcurrent races a Reindex of version v with a Commit of v+1:
// whichever order they land in, v+1 must end with its own entries.
func reindexConcurrent(t *testing.T, e *env) {
	ri := e.reindexer(t)
	const rounds = 8
	cur := e.put("Observation", "race", tok("code", loinc, "gen1", "")).VersionID
	for round := range rounds {
		next := e.write("Observation", "race", cur, tok("code", loinc, fmt.Sprintf("gen%d", cur+1), ""))
		var commitErr, reindexErr error
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			_, commitErr = e.b.Commit(e.ctx, next)
		})
		wg.Go(func() {
			<-start
			reindexErr = ri.Reindex(e.ctx, "Observation", "race", cur, []storage.Entry{tok("code", loinc, "stale", "")})
		})
		close(start)
		wg.Wait()
		if commitErr != nil {
			t.Fatalf("round %d: Commit of v%d racing a Reindex: %v", round, cur+1, commitErr)
		}
		if reindexErr != nil && !errors.Is(reindexErr, storage.ErrVersionConflict) {
			t.Fatalf("round %d: Reindex of v%d: %v, want nil or ErrVersionConflict", round, cur, reindexErr)
		}
		cur++
		if v := e.current("Observation", "race"); v != cur {
			t.Fatalf("round %d: current version %d, want %d", round, v, cur)
		}
		wantList(t, e.searchAll(storage.Query{Filter: codeIs("stale"), Count: 10}), nil, fmt.Sprintf("round %d: stale entries on v%d", round, cur))
		wantList(t, e.searchAll(storage.Query{Filter: codeIs(fmt.Sprintf("gen%d", cur)), Count: 10}), []string{"Observation/race"},
			fmt.Sprintf("round %d: entries of v%d", round, cur))
	}
}
