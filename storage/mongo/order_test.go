package mongo

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/anodyne-fhir/anodyne/storage"
)

// TestOrderFieldEncoding pins the sort-key field names and BSON types
// written to disk: changing them leaves stored documents sorting as
// missing until reindexed.
func TestOrderFieldEncoding(t *testing.T) {
	for _, c := range []struct {
		param string
		kind  storage.Kind
		want  string
		ok    bool
	}{
		{"date", storage.KindDate, "o.date~date", true},
		{"_lastUpdated", storage.KindDate, "o._lastUpdated~date", true},
		{"value-quantity", storage.KindQuantity, "o.value-quantity~quantity", true},
		{"name", storage.KindString, "o.name~string", true},
		{"a.b", storage.KindString, "", false},
		{"$x", storage.KindString, "", false},
	} {
		got, ok := orderField(c.param, c.kind)
		if got != c.want || ok != c.ok {
			t.Errorf("orderField(%q, %s) = %q, %v; want %q, %v", c.param, c.kind, got, ok, c.want, c.ok)
		}
	}
	o := orderOf([]storage.Entry{
		{Param: "date", Kind: storage.KindDate, Low: 10, High: 20},
		{Param: "date", Kind: storage.KindDate, Low: 5, High: 15},
		{Param: "probability", Kind: storage.KindNumber, Num: 0.5},
		{Param: "name", Kind: storage.KindString, Text: "zed"},
		{Param: "name", Kind: storage.KindString, Text: "adam"},
		{Param: "combo", Kind: storage.KindComposite},
	})
	raw, err := bson.Marshal(bson.D{{Key: "o", Value: o}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path []string
		want bson.RawValue
	}{
		{[]string{"o", "date~date", "l"}, bson.RawValue{Type: bson.TypeInt64, Value: bsonInt64(5)}},
		{[]string{"o", "date~date", "h"}, bson.RawValue{Type: bson.TypeInt64, Value: bsonInt64(20)}},
	} {
		got, err := bson.Raw(raw).LookupErr(c.path...)
		if err != nil || got.Type != c.want.Type || !slices.Equal(got.Value, c.want.Value) {
			t.Errorf("%v = %v (%v), want %v", c.path, got, err, c.want)
		}
	}
	if s := o["name~string"]; s.Low != "adam" || s.High != "zed" {
		t.Errorf("name keys = %+v, want adam..zed", s)
	}
	if n := o["probability~number"]; n.Low != 0.5 || n.High != 0.5 {
		t.Errorf("probability keys = %+v", n)
	}
	if _, ok := o["combo~composite"]; ok {
		t.Error("a composite parameter has a sort key; it cannot be sorted by")
	}
}

func bsonInt64(v int64) []byte {
	_, b, _ := bson.MarshalValue(v)
	return b
}

// TestSortedSearchInDatabase shows that a sorted search with an exact
// filter no longer holds every match in Go: with the Go-side limit lowered
// to 3, a patient's 40 Observations still page in order, the same order an
// independent sort of the fixture gives (lowest or highest date, missing
// last, ties by id), while a two-key sort, which stays on the Go path,
// meets the limit.
func TestSortedSearchInDatabase(t *testing.T) {
	b := fresh(t)
	b.dbPaging = true
	b.candidateLimit = 3
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(7, 11))
	type obs struct {
		id     string
		lo, hi int64 // lowest Low and highest High; has false when no date
		has    bool
	}
	var fixture []obs
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	for i := range 40 {
		id := fmt.Sprintf("o%02d", i)
		es := []storage.Entry{
			{Param: "subject", Kind: storage.KindReference, RefType: "Patient", RefID: "heavy"},
			{Param: "code", Kind: storage.KindToken, System: "http://loinc.org", Code: "72514-3"},
		}
		o := obs{id: id}
		// A fifth have no date; some have two; days repeat to make ties.
		for n := rng.IntN(3); n > 0 && i%5 != 0; n-- {
			lo := base + int64(rng.IntN(10))*86_400_000
			hi := lo + 86_399_999
			es = append(es, storage.Entry{Param: "date", Kind: storage.KindDate, Low: lo, High: hi})
			if !o.has || lo < o.lo {
				o.lo = lo
			}
			if !o.has || hi > o.hi {
				o.hi = hi
			}
			o.has = true
		}
		fixture = append(fixture, o)
		w := storage.Write{Record: storage.Record{Type: "Observation", ID: id, VersionID: 1, LastUpdated: time.Now(), Method: "POST", JSON: []byte(`{}`)}, Index: es}
		if _, err := b.Commit(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	// Another patient's Observation, which the filter must leave out.
	other := storage.Write{Record: storage.Record{Type: "Observation", ID: "x", VersionID: 1, LastUpdated: time.Now(), Method: "POST", JSON: []byte(`{}`)},
		Index: []storage.Entry{{Param: "subject", Kind: storage.KindReference, RefType: "Patient", RefID: "other"}, {Param: "date", Kind: storage.KindDate, Low: base, High: base}}}
	if _, err := b.Commit(ctx, other); err != nil {
		t.Fatal(err)
	}
	filter := storage.Match{Param: "subject", Kind: storage.KindReference, Cond: storage.And{Exprs: []storage.Expr{
		storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: "Patient"},
		storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: "heavy"},
	}}}
	for _, desc := range []bool{true, false} {
		want := slices.Clone(fixture)
		slices.SortFunc(want, func(x, y obs) int {
			switch {
			case x.has != y.has:
				if x.has {
					return -1
				}
				return 1
			case !x.has:
			case desc && x.hi != y.hi:
				if x.hi > y.hi {
					return -1
				}
				return 1
			case !desc && x.lo != y.lo:
				if x.lo < y.lo {
					return -1
				}
				return 1
			}
			return cmpString(x.id, y.id)
		})
		var wantIDs []string
		for _, o := range want {
			wantIDs = append(wantIDs, o.id)
		}
		for _, count := range []int{7, 1, 40} {
			q := storage.Query{Types: []string{"Observation"}, Filter: filter, Count: count, Total: true,
				Sort: []storage.Sort{{Param: "date", Kind: storage.KindDate, Desc: desc}}}
			var got []string
			for range 100 {
				p, err := b.Search(ctx, q)
				if err != nil {
					t.Fatalf("desc=%v count=%d: %v", desc, count, err)
				}
				if p.Total != 40 {
					t.Errorf("Total = %d, want 40", p.Total)
				}
				for _, r := range p.Records {
					got = append(got, r.ID)
				}
				if p.Next == "" {
					break
				}
				q.Cursor = p.Next
			}
			if !slices.Equal(got, wantIDs) {
				t.Errorf("desc=%v count=%d:\n got %v\nwant %v", desc, count, got, wantIDs)
			}
		}
	}
	_, err := b.Search(ctx, storage.Query{Types: []string{"Observation"}, Filter: filter, Count: 5,
		Sort: []storage.Sort{{Param: "date", Kind: storage.KindDate}, {Param: "code", Kind: storage.KindToken}}})
	if !errors.Is(err, storage.ErrUnsupported) {
		t.Fatalf("two-key sort over 40 matches with the limit at 3: err = %v, want ErrUnsupported (the Go path)", err)
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
