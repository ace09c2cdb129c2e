package storagetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// filteredHistoryCases check HistoryRequest.Filter and TypeFilters: a
// version is judged by its own entries (a delete by the deleted
// version's), and paging runs over the matching versions only.
var filteredHistoryCases = []testCase{
	{"OwnEntries", historyOwnEntries},
	{"Paging", historyFilterPaging},
	{"At", historyFilterAt},
	{"TypeFilters", historyTypeFilters},
	{"Reindexed", historyFilterReindexed},
	{"Refused", historyFilterRefused},
}

func subjectIs(patient string) storage.Expr {
	return match("subject", storage.KindReference, and(
		cmp(storage.FieldRefType, storage.OpEq, "Patient"), cmp(storage.FieldRefID, storage.OpEq, patient)))
}

// compartment mirrors what an authorization layer hands the backend: an
// Or of references, as for a type with several compartment parameters.
func compartment(patient string) storage.Expr {
	return or(subjectIs(patient), match("performer", storage.KindReference, and(
		cmp(storage.FieldRefType, storage.OpEq, "Patient"), cmp(storage.FieldRefID, storage.OpEq, patient))))
}

// owned is one version written by the fixture with the patient it belongs
// to, recorded by the test itself rather than read back from the store.
type owned struct {
	rec     storage.Record
	patient string
}

// ownedFixture interleaves two patients' Observations, moves one from a to
// b, and deletes one of each patient's.
func ownedFixture(e *env) []owned {
	var out []owned
	obs := func(id, patient string, extra ...storage.Entry) {
		out = append(out, owned{e.put("Observation", id, append([]storage.Entry{ref("subject", "Patient", patient)}, extra...)...), patient})
	}
	del := func(id, patient string) { out = append(out, owned{e.del("Observation", id), patient}) }
	out = append(out, owned{e.put("Patient", "a"), "a"})
	out = append(out, owned{e.put("Patient", "b"), "b"})
	obs("a1", "a", tok("code", loinc, "pain", ""))
	obs("b1", "b", tok("code", loinc, "pain", ""))
	obs("moved", "a")
	obs("b1", "b", tok("code", loinc, "hr", ""))
	out = append(out, owned{e.put("Observation", "perf", ref("performer", "Patient", "a")), "a"})
	obs("moved", "b") // version 2 belongs to b; version 1 stays a's
	obs("a1", "a", tok("code", loinc, "hr", ""))
	del("moved", "b") // deletes b's version: b's delete
	del("a1", "a")
	out = append(out, owned{e.put("Observation", "nobody", tok("code", loinc, "pain", "")), ""})
	obs("b2", "b")
	return out
}

func ownedBy(all []owned, patient, typ string) []string {
	var out []storage.Record
	for _, o := range all {
		if o.patient == patient && (typ == "" || o.rec.Type == typ) {
			out = append(out, o.rec)
		}
	}
	slices.Reverse(out)
	return versions(out)
}

func historyOwnEntries(t *testing.T, e *env) {
	all := ownedFixture(e)
	for _, p := range []string{"a", "b"} {
		wantList(t, versions(e.history(storage.HistoryRequest{Type: "Observation", Filter: compartment(p)})),
			ownedBy(all, p, "Observation"), "type history of patient "+p)
	}
	wantList(t, versions(e.history(storage.HistoryRequest{Type: "Observation", ID: "moved", Filter: compartment("a")})),
		[]string{"Observation/moved/1"}, "instance history of a moved resource, old owner")
	wantList(t, versions(e.history(storage.HistoryRequest{Type: "Observation", ID: "moved", Filter: compartment("b")})),
		[]string{"Observation/moved/3", "Observation/moved/2"}, "instance history of a moved resource, new owner (with its delete)")
	wantList(t, versions(e.history(storage.HistoryRequest{Type: "Observation", Filter: compartment("c")})),
		[]string{}, "patient without versions")
	// Entry-level conditions hold on the version's own entries: a1 had
	// code pain in version 1 and hr in version 2; its delete copies hr.
	wantList(t, versions(e.history(storage.HistoryRequest{Type: "Observation", Filter: and(subjectIs("a"), codeIs("hr"))})),
		[]string{"Observation/a1/3", "Observation/a1/2"}, "subject a and code hr")
	wantList(t, versions(e.history(storage.HistoryRequest{Type: "Observation", Filter: codeIs("pain")})),
		[]string{"Observation/nobody/1", "Observation/b1/1", "Observation/a1/1"}, "code pain, no compartment")
	wantList(t, versions(e.history(storage.HistoryRequest{Type: "Patient", Filter: storage.IDs{IDs: []string{"b"}}})),
		[]string{"Patient/b/1"}, "ids")
	notA := versions(e.history(storage.HistoryRequest{Type: "Observation", Filter: storage.Not{Expr: compartment("a")}}))
	var want []string
	for _, o := range slices.Backward(all) {
		if o.rec.Type == "Observation" && o.patient != "a" {
			want = append(want, versions([]storage.Record{o.rec})...)
		}
	}
	wantList(t, notA, want, "Not compartment a")
	for _, r := range e.history(storage.HistoryRequest{Type: "Observation", Filter: compartment("b")}) {
		if r.Deleted != (len(r.JSON) == 0) {
			t.Fatalf("%s/%s/%d: Deleted=%v with %d bytes of JSON", r.Type, r.ID, r.VersionID, r.Deleted, len(r.JSON))
		}
	}
}

// filteredPages pages through req and checks that every page but the
// last is full and that the last one is not empty (unless nothing matched).
func (e *env) filteredPages(t *testing.T, req storage.HistoryRequest) []string {
	t.Helper()
	var got []string
	for page := 0; ; page++ {
		if page > 100 {
			t.Fatal("filtered history paging does not end")
		}
		p, err := e.b.History(e.ctx, req)
		if err != nil {
			t.Fatalf("History page %d: %v", page, err)
		}
		if p.Next != "" && len(p.Records) != req.Count {
			t.Fatalf("page %d has %d records and a next cursor, want full pages of %d", page, len(p.Records), req.Count)
		}
		if p.Next == "" && len(p.Records) == 0 && page > 0 {
			t.Fatalf("page %d is empty: the previous page should not have had a next cursor", page)
		}
		got = append(got, versions(p.Records)...)
		if p.Next == "" {
			return got
		}
		req.Cursor = p.Next
	}
}

func historyFilterPaging(t *testing.T, e *env) {
	// a's versions are few among many of b's, at both ends of the history.
	var want []string
	add := func(r storage.Record) { want = append(want, versions([]storage.Record{r})...) }
	add(e.put("Observation", "a-first", ref("subject", "Patient", "a")))
	for i := range 9 {
		e.put("Observation", fmt.Sprintf("b%d", i%3), ref("subject", "Patient", "b"))
		if i == 4 {
			add(e.put("Observation", "a-mid", ref("subject", "Patient", "a")))
		}
	}
	add(e.put("Observation", "a-last", ref("subject", "Patient", "a")))
	for i := range 3 {
		e.put("Observation", fmt.Sprintf("b%d", i), ref("subject", "Patient", "b"))
	}
	slices.Reverse(want)
	for _, n := range []int{1, 2, 3, 4} {
		got := e.filteredPages(t, storage.HistoryRequest{Type: "Observation", Filter: compartment("a"), Count: n})
		wantList(t, got, want, fmt.Sprintf("patient a's history in pages of %d", n))
		got = e.filteredPages(t, storage.HistoryRequest{Filter: compartment("a"), Count: n})
		wantList(t, got, want, fmt.Sprintf("system history filtered to a in pages of %d", n))
	}
	// A cursor is bound to its filter.
	p, err := e.b.History(e.ctx, storage.HistoryRequest{Type: "Observation", Filter: compartment("b"), Count: 2})
	if err != nil || p.Next == "" {
		t.Fatalf("first page of b: next %q, err %v", p.Next, err)
	}
	_, err = e.b.History(e.ctx, storage.HistoryRequest{Type: "Observation", Filter: compartment("a"), Count: 2, Cursor: p.Next})
	wantErr(t, err, storage.ErrBadCursor, "cursor of patient b's history replayed with patient a's filter")
	_, err = e.b.History(e.ctx, storage.HistoryRequest{Type: "Observation", Count: 2, Cursor: p.Next})
	wantErr(t, err, storage.ErrBadCursor, "cursor of a filtered history replayed without the filter")
}

func historyFilterAt(t *testing.T, e *env) {
	all := ownedFixture(e)
	// Just after moved/2 (b's) was written: moved is b's at that instant,
	// so a's view at At does not show it, not even its a-owned version 1.
	var at time.Time
	for _, o := range all {
		if o.rec.ID == "moved" && o.rec.VersionID == 2 {
			at = o.rec.LastUpdated.Add(500 * time.Millisecond)
		}
	}
	wantList(t, versions(e.history(storage.HistoryRequest{Type: "Observation", At: at, Filter: compartment("a")})),
		[]string{"Observation/perf/1", "Observation/a1/1"}, "a's Observations at an instant")
	wantList(t, versions(e.history(storage.HistoryRequest{Type: "Observation", At: at, Filter: compartment("b")})),
		[]string{"Observation/moved/2", "Observation/b1/2"}, "b's Observations at an instant")
}

func historyTypeFilters(t *testing.T, e *env) {
	all := ownedFixture(e)
	wantList(t, versions(e.history(storage.HistoryRequest{TypeFilters: map[string]storage.Expr{
		"Patient": storage.IDs{IDs: []string{"a"}}, "Observation": compartment("a"),
	}})), ownedBy(all, "a", ""), "system history of patient a across types")
	var obs []storage.Record
	for _, o := range all {
		if o.rec.Type == "Observation" {
			obs = append(obs, o.rec)
		}
	}
	slices.Reverse(obs)
	wantList(t, versions(e.history(storage.HistoryRequest{TypeFilters: map[string]storage.Expr{"Observation": nil}})),
		versions(obs), "one type, unfiltered")
	wantList(t, versions(e.history(storage.HistoryRequest{TypeFilters: map[string]storage.Expr{}})),
		[]string{}, "no type at all")
	wantList(t, versions(e.history(storage.HistoryRequest{Filter: codeIs("hr"), TypeFilters: map[string]storage.Expr{
		"Observation": subjectIs("b"), "Patient": nil,
	}})), []string{"Observation/b1/2"}, "Filter on top of TypeFilters")
	_, err := e.b.History(e.ctx, storage.HistoryRequest{Type: "Patient", TypeFilters: map[string]storage.Expr{"Patient": nil}})
	if err == nil {
		t.Fatal("TypeFilters with Type: want an error")
	}
}

func historyFilterReindexed(t *testing.T, e *env) {
	ri := e.reindexer(t)
	v1 := e.put("Observation", "o", ref("subject", "Patient", "a"))
	v2 := e.put("Observation", "o", ref("subject", "Patient", "a"))
	if err := ri.Reindex(e.ctx, "Observation", "o", v2.VersionID, []storage.Entry{
		ref("subject", "Patient", "a"), ref("performer", "Patient", "b"),
	}); err != nil {
		t.Fatalf("Reindex: %v", err)
	}
	wantList(t, versions(e.history(storage.HistoryRequest{Type: "Observation", Filter: compartment("b")})),
		versions([]storage.Record{v2}), "a reindexed version matches by its new entries")
	wantList(t, versions(e.history(storage.HistoryRequest{Type: "Observation", Filter: compartment("a")})),
		versions([]storage.Record{v2, v1}), "and still by its old ones")
	d := e.del("Observation", "o")
	wantList(t, versions(e.history(storage.HistoryRequest{Type: "Observation", Filter: compartment("b")})),
		versions([]storage.Record{d, v2}), "the delete copies the reindexed entries")
}

func historyFilterRefused(t *testing.T, e *env) {
	e.put("Patient", "a")
	for _, f := range []storage.Expr{
		storage.Chain{Param: "subject", Target: "Patient", Where: storage.IDs{IDs: []string{"a"}}},
		or(subjectIs("a"), storage.Has{Type: "Observation", Param: "subject", Where: codeIs("x")}),
	} {
		_, err := e.b.History(e.ctx, storage.HistoryRequest{Filter: f})
		wantErr(t, err, storage.ErrUnsupported, fmt.Sprintf("history filtered by %v", f))
		_, err = e.b.History(e.ctx, storage.HistoryRequest{TypeFilters: map[string]storage.Expr{"Observation": f}})
		wantErr(t, err, storage.ErrUnsupported, fmt.Sprintf("history type-filtered by %v", f))
	}
}
