package mongo

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

func TestKeysOf(t *testing.T) {
	tests := []struct {
		name    string
		entries []storage.Entry
		want    []string
	}{
		{"none", nil, []string{}},
		{"token", []storage.Entry{{Param: "code", Kind: storage.KindToken, System: "s", Code: "c"}},
			[]string{"code\x1f2", "code\x1f2\x1f3\x1fs", "code\x1f2\x1f4\x1fc"}},
		{"reference", []storage.Entry{{Param: "subject", Kind: storage.KindReference, RefType: "Patient", RefID: "p1"}},
			[]string{"subject\x1f3", "subject\x1f3\x1f5\x1fPatient", "subject\x1f3\x1f6\x1fp1", "subject\x1f3\x1fref\x1fPatient/p1"}},
		{"date has only the marker", []storage.Entry{{Param: "date", Kind: storage.KindDate, Low: 1, High: 2}},
			[]string{"date\x1f4"}},
		{"duplicates collapse", []storage.Entry{
			{Param: "name", Kind: storage.KindString, Text: "ann", Exact: "Ann"},
			{Param: "name", Kind: storage.KindString, Text: "ann", Exact: "ANN"},
		}, []string{"name\x1f1", "name\x1f1\x1f1\x1fann", "name\x1f1\x1f2\x1fANN", "name\x1f1\x1f2\x1fAnn"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := keysOf(tt.entries); !slices.Equal(got, tt.want) {
				t.Fatalf("keysOf = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEntryDocRoundTrip(t *testing.T) {
	in := []storage.Entry{
		{Param: "date", Kind: storage.KindDate, Low: 0, High: 5},
		{Param: "v", Kind: storage.KindQuantity, Num: 0, NumLow: -0.5, NumHigh: 0.5, System: "u", Code: "mg"},
		{Param: "c", Kind: storage.KindComposite, Parts: []storage.Entry{{Kind: storage.KindToken, Code: "x"}, {Kind: storage.KindNumber, Num: 3}}},
	}
	docs := toEntryDocs(in)
	if docs[0].Low == nil || docs[1].Num == nil {
		t.Fatalf("zero range fields of range kinds must be stored: %+v", docs)
	}
	out := fromEntryDocs(docs)
	if fmt.Sprint(out) != fmt.Sprint(in) {
		t.Fatalf("round trip:\n got  %+v\n want %+v", out, in)
	}
}

// TestFilterExactness pins which translations are exact in each mode: an
// exact filter is paged in the database, a superset is re-checked in Go.
func TestFilterExactness(t *testing.T) {
	code := storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "c"}
	sys := storage.Cmp{Field: storage.FieldSystem, Op: storage.OpEq, Value: "s"}
	low := storage.Cmp{Field: storage.FieldLow, Op: storage.OpGe, Value: int64(5)}
	m := func(cond storage.Expr) storage.Match {
		return storage.Match{Param: "p", Kind: storage.KindToken, Cond: cond}
	}
	tests := []struct {
		name                  string
		expr                  storage.Expr
		superset, elemMatched bool // exactness without and with $elemMatch
	}{
		{"nil", nil, true, true},
		{"has any", m(nil), true, true},
		{"one equality", m(code), true, true},
		{"two equalities", m(storage.And{Exprs: []storage.Expr{code, sys}}), false, true},
		{"range", storage.Match{Param: "d", Kind: storage.KindDate, Cond: low}, false, true},
		{"not of exact", storage.Not{Expr: m(code)}, true, true},
		{"not of superset", storage.Not{Expr: m(storage.And{Exprs: []storage.Expr{code, sys}})}, false, true},
		{"ids", storage.IDs{IDs: []string{"a"}}, true, true},
		{"or mixed", storage.Or{Exprs: []storage.Expr{m(code), storage.Match{Param: "d", Kind: storage.KindDate, Cond: low}}}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, mode := range []bool{false, true} {
				b := &Backend{elemMatch: mode}
				root, err := b.resolve(t.Context(), tt.expr, 0)
				if err != nil {
					t.Fatal(err)
				}
				_, exact, err := b.filter(root)
				if err != nil {
					t.Fatal(err)
				}
				want := tt.superset
				if mode {
					want = tt.elemMatched
				}
				if exact != want {
					t.Errorf("elemMatch=%v: exact = %v, want %v", mode, exact, want)
				}
			}
		})
	}
}

// TestSearchAgreesWithMatches compares Search with the reference evaluator
// storage.Matches over a small fixture, for conditions where several
// entries of one parameter could be confused (the point of $elemMatch or
// of the Go re-check).
func TestSearchAgreesWithMatches(t *testing.T) {
	b := fresh(t)
	ctx := t.Context()
	tok := func(s, c string) storage.Entry {
		return storage.Entry{Param: "code", Kind: storage.KindToken, System: s, Code: c}
	}
	day := func(d int) storage.Entry {
		lo := time.Date(2024, 1, d, 0, 0, 0, 0, time.UTC).UnixMilli()
		return storage.Entry{Param: "date", Kind: storage.KindDate, Low: lo, High: lo + 86_399_999}
	}
	fixture := map[string][]storage.Entry{
		"o1": {tok("a", "1"), tok("b", "2"), day(1)},
		"o2": {tok("a", "2"), day(2), day(9)},
		"o3": {tok("b", "1"), day(5)},
		"o4": {tok("a", "1")},
		"o5": {day(3), {Param: "v", Kind: storage.KindQuantity, Num: 0, NumLow: -0.5, NumHigh: 0.5}},
		"o6": {{Param: "v", Kind: storage.KindQuantity, Num: 7, NumLow: 6.5, NumHigh: 7.5}},
	}
	ids := make([]string, 0, len(fixture))
	for id := range fixture {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		w := storage.Write{Record: storage.Record{Type: "Observation", ID: id, VersionID: 1, LastUpdated: time.Now(), Method: "POST", JSON: []byte(`{}`)}, Index: fixture[id]}
		if _, err := b.Commit(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	ms := func(d int) int64 { return time.Date(2024, 1, d, 0, 0, 0, 0, time.UTC).UnixMilli() }
	cmpv := func(f storage.Field, op storage.Op, v any) storage.Cmp {
		return storage.Cmp{Field: f, Op: op, Value: v}
	}
	and := func(es ...storage.Expr) storage.And { return storage.And{Exprs: es} }
	exprs := []storage.Expr{
		storage.Match{Param: "code", Kind: storage.KindToken, Cond: and(cmpv(storage.FieldSystem, storage.OpEq, "a"), cmpv(storage.FieldCode, storage.OpEq, "2"))},
		storage.Match{Param: "code", Kind: storage.KindToken, Cond: and(cmpv(storage.FieldSystem, storage.OpEq, "b"), cmpv(storage.FieldCode, storage.OpEq, "1"))},
		storage.Match{Param: "date", Kind: storage.KindDate, Cond: and(cmpv(storage.FieldLow, storage.OpGe, ms(3)), cmpv(storage.FieldHigh, storage.OpLt, ms(6)))},
		storage.Match{Param: "v", Kind: storage.KindQuantity, Cond: cmpv(storage.FieldNum, storage.OpLt, 1.0)},
		storage.Match{Param: "code", Kind: storage.KindToken, Cond: cmpv(storage.FieldSystem, storage.OpNe, "a")},
		storage.Not{Expr: storage.Match{Param: "code", Kind: storage.KindToken, Cond: and(cmpv(storage.FieldSystem, storage.OpEq, "a"), cmpv(storage.FieldCode, storage.OpEq, "1"))}},
		storage.Or{Exprs: []storage.Expr{storage.IDs{IDs: []string{"o6"}}, storage.Match{Param: "code", Kind: storage.KindToken, Cond: cmpv(storage.FieldCode, storage.OpPrefix, "2")}}},
	}
	for _, e := range exprs {
		t.Run(e.String(), func(t *testing.T) {
			var want []string
			for _, id := range ids {
				ok, err := storage.Matches(e, id, fixture[id])
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					want = append(want, "Observation/"+id)
				}
			}
			var got []string
			q := storage.Query{Types: []string{"Observation"}, Filter: e, Count: 2, Total: true}
			for {
				p, err := b.Search(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				if p.Total != int64(len(want)) {
					t.Errorf("Total = %d, want %d", p.Total, len(want))
				}
				for _, r := range p.Records {
					got = append(got, r.Type+"/"+r.ID)
				}
				if p.Next == "" {
					break
				}
				q.Cursor = p.Next
			}
			if !slices.Equal(got, want) {
				t.Fatalf("Search = %v, Matches = %v", got, want)
			}
		})
	}
}

func TestCapabilities(t *testing.T) {
	b := fresh(t)
	c := b.Capabilities(t.Context())
	t.Logf("capabilities: %+v", c)
	if !c.AtomicCommit {
		t.Fatalf("AtomicCommit = false: %+v", c)
	}
	if server.Get(t).FerretDB {
		if c.Name != "ferretdb" || b.transactions || b.elemMatch || b.dbPaging {
			t.Fatalf("FerretDB detected as %+v (transactions %v, elemMatch %v, dbPaging %v)", c, b.transactions, b.elemMatch, b.dbPaging)
		}
		if !slices.ContainsFunc(c.Notes, func(n string) bool { return strings.Contains(n, "commit record") }) {
			t.Errorf("notes do not mention commit records: %q", c.Notes)
		}
	}
}

func TestBadCursors(t *testing.T) {
	b := fresh(t)
	ctx := t.Context()
	for _, id := range []string{"a", "b", "c"} {
		w := storage.Write{Record: storage.Record{Type: "Patient", ID: id, VersionID: 1, LastUpdated: time.Now(), Method: "POST", JSON: []byte(`{}`)}}
		if _, err := b.Commit(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	p, err := b.Search(ctx, storage.Query{Types: []string{"Patient"}, Count: 1})
	if err != nil || p.Next == "" {
		t.Fatalf("first page: %+v, %v", p, err)
	}
	h, err := b.History(ctx, storage.HistoryRequest{Count: 1})
	if err != nil || h.Next == "" {
		t.Fatalf("first history page: %+v, %v", h, err)
	}
	tests := []struct {
		name string
		run  func() error
	}{
		{"garbage", func() error {
			_, err := b.Search(ctx, storage.Query{Types: []string{"Patient"}, Count: 1, Cursor: "!!"})
			return err
		}},
		{"other query", func() error {
			_, err := b.Search(ctx, storage.Query{Types: []string{"Observation"}, Count: 1, Cursor: p.Next})
			return err
		}},
		{"history cursor on search", func() error {
			_, err := b.Search(ctx, storage.Query{Types: []string{"Patient"}, Count: 1, Cursor: h.Next})
			return err
		}},
		{"search cursor on history", func() error {
			_, err := b.History(ctx, storage.HistoryRequest{Count: 1, Cursor: p.Next})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.run(); !errors.Is(err, storage.ErrBadCursor) {
				t.Fatalf("got %v, want ErrBadCursor", err)
			}
		})
	}
}
