package sqlite

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// planRes is the test model of one stored resource: what the filters of
// TestSearchPlans look at, so that the expected answers are computed
// here, independently of SQL.
type planRes struct {
	typ, id string
	code    string
	value   float64
	flag    bool
	deleted bool
	// dates are the resource's "date" entries (Low = High), none for some.
	dates []int64
}

// sortKey is what a date sort orders r by: MAX(high) descending, MIN(low)
// ascending; ok is false for a resource without dates (sorted last).
func (r planRes) sortKey(desc bool) (k int64, ok bool) {
	for i, d := range r.dates {
		if i == 0 || desc && d > k || !desc && d < k {
			k = d
		}
	}
	return k, len(r.dates) > 0
}

func (r planRes) entries() []storage.Entry {
	e := []storage.Entry{
		{Param: "code", Kind: storage.KindToken, System: "http://loinc.org", Code: r.code},
		{Param: "value-quantity", Kind: storage.KindQuantity, Num: r.value, NumLow: r.value - 0.5, NumHigh: r.value + 0.5, System: "http://unitsofmeasure.org", Code: "%"},
	}
	if r.flag {
		e = append(e, storage.Entry{Param: "flag", Kind: storage.KindToken, Code: "yes"})
	}
	for _, d := range r.dates {
		e = append(e, storage.Entry{Param: "date", Kind: storage.KindDate, Low: d, High: d})
	}
	return e
}

// loadPlanData stores enough resources that a common code is "broad"
// (more index entries than the walk window), with deletes and updates
// spread over the (type, id) order so that the walk has to skip them.
func loadPlanData(t *testing.T, b *Backend) []planRes {
	t.Helper()
	var model []planRes
	var batch []storage.Write
	flush := func() {
		if len(batch) > 0 {
			if _, err := b.Commit(t.Context(), batch...); err != nil {
				t.Fatalf("commit: %v", err)
			}
			batch = batch[:0]
		}
	}
	write := func(r planRes, version int64) {
		w := storage.Write{Record: storage.Record{Type: r.typ, ID: r.id, VersionID: version, LastUpdated: time.UnixMilli(1e12), Method: "PUT",
			JSON: fmt.Appendf(nil, `{"resourceType":%q,"id":%q,"v":%d}`, r.typ, r.id, version)}, ExpectVersion: version - 1}
		if r.deleted {
			w.Deleted, w.Method, w.JSON = true, "DELETE", nil
		} else {
			w.Index = r.entries()
		}
		batch = append(batch, w)
		if len(batch) == 500 {
			flush()
		}
	}
	for i := range 3000 {
		r := planRes{typ: "Observation", id: fmt.Sprintf("o%05d", i), code: "A", value: float64(85 + i%16), flag: i%97 == 0}
		if i%2 == 1 {
			r.code = "B"
		}
		if i%500 == 7 {
			r.code = "R"
		}
		// Keys scattered over the id order, each shared by three
		// resources (ties broken by id); some resources have a second,
		// earlier date, some none.
		if i%11 != 0 {
			d := int64(i*7919%3000/3) * 60000
			r.dates = []int64{d}
			if i%5 == 0 {
				r.dates = append(r.dates, d-600000)
			}
		}
		model = append(model, r)
	}
	for i := range 300 {
		model = append(model, planRes{typ: "Condition", id: fmt.Sprintf("c%04d", i), code: "A", value: 1, dates: []int64{int64(i%100) * 60000}})
	}
	for _, r := range model {
		write(r, 1)
	}
	flush()
	// Second versions: some deleted, some moved from A to B, in the first
	// window of the walk as well as later.
	for i := range model {
		switch {
		case model[i].typ == "Observation" && i%37 == 0:
			model[i].deleted = true
		case model[i].typ == "Observation" && i%41 == 0 && model[i].code == "A":
			model[i].code = "B"
		default:
			continue
		}
		write(model[i], 2)
	}
	flush()
	return model
}

// planLog records the plan of every search the backend logs.
type planLog struct {
	mu    sync.Mutex
	plans []string
}

func (l *planLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *planLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *planLog) WithGroup(string) slog.Handler            { return l }
func (l *planLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "plan" {
			l.mu.Lock()
			l.plans = append(l.plans, a.Value.String())
			l.mu.Unlock()
		}
		return true
	})
	return nil
}

func (l *planLog) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.plans) == 0 {
		return ""
	}
	return l.plans[len(l.plans)-1]
}

var (
	dateDesc = storage.Sort{Param: "date", Kind: storage.KindDate, Desc: true}
	dateAsc  = storage.Sort{Param: "date", Kind: storage.KindDate}
)

func tokenIs(param, code string) storage.Expr {
	return storage.Match{Param: param, Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: code}}
}

func valueBelow(v float64) storage.Expr {
	return storage.Match{Param: "value-quantity", Kind: storage.KindQuantity, Cond: storage.Cmp{Field: storage.FieldNum, Op: storage.OpLt, Value: v}}
}

// TestSearchPlans checks that every plan (walk in (type, id) order, the
// walk completed by collecting after its window, and collect) returns
// exactly the matches in (type, id) order, page after page, with correct
// totals.
func TestSearchPlans(t *testing.T) {
	log := &planLog{}
	b, err := Open(t.Context(), t.TempDir(), WithLogger(slog.New(log)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	model := loadPlanData(t, b)

	tests := []struct {
		name   string
		types  []string
		filter storage.Expr
		want   func(r planRes) bool
		// plans are the plans the first page of 20 may use: the walk must
		// be taken where it pays, and only there. Pages of 333 walk up to
		// 2,672 rows, more entries than any code has here: they collect.
		plans []string
		sort  []storage.Sort
	}{
		{"broad dense: walk fills pages", []string{"Observation"}, tokenIs("code", "A"),
			func(r planRes) bool { return r.code == "A" }, []string{"walk"}, nil},
		{"broad with value: walk", []string{"Observation"}, storage.And{Exprs: []storage.Expr{tokenIs("code", "A"), valueBelow(90)}},
			func(r planRes) bool { return r.code == "A" && r.value < 90 }, []string{"walk"}, nil},
		// Two equality lookups: the counted statistics make the sparse one
		// drive, where the kind order alone walked code A.
		{"broad code, sparse flag: the flag drives", []string{"Observation"}, storage.And{Exprs: []storage.Expr{tokenIs("code", "A"), tokenIs("flag", "yes")}},
			func(r planRes) bool { return r.code == "A" && r.flag }, []string{"collect"}, nil},
		{"broad driver, no result", []string{"Observation"}, storage.And{Exprs: []storage.Expr{tokenIs("code", "A"), valueBelow(0)}},
			func(planRes) bool { return false }, []string{"walk+collect"}, nil},
		{"broad, every type", nil, tokenIs("code", "A"),
			func(r planRes) bool { return r.code == "A" }, []string{"walk"}, nil},
		{"broad, two types: collect", []string{"Condition", "Observation"}, tokenIs("code", "A"),
			func(r planRes) bool { return r.code == "A" }, []string{"collect"}, nil},
		{"wrong type", []string{"Patient"}, tokenIs("code", "A"),
			func(planRes) bool { return false }, []string{"walk"}, nil},
		{"selective: collect", []string{"Observation"}, tokenIs("code", "R"),
			func(r planRes) bool { return r.code == "R" }, []string{"collect"}, nil},
		{"broad range alone", []string{"Observation"}, valueBelow(95),
			func(r planRes) bool { return r.typ == "Observation" && r.value < 95 }, []string{"walk"}, nil},
		{"not: collect", []string{"Observation"}, storage.Not{Expr: tokenIs("code", "A")},
			func(r planRes) bool { return r.code != "A" }, []string{"collect"}, nil},
		{"broad and not", []string{"Observation"}, storage.And{Exprs: []storage.Expr{tokenIs("code", "B"), storage.Not{Expr: valueBelow(99)}}},
			func(r planRes) bool { return r.code == "B" && r.value >= 99 }, []string{"walk"}, nil},
		{"broad, newest first: sorted walk", []string{"Observation"}, tokenIs("code", "A"),
			func(r planRes) bool { return r.code == "A" }, []string{"sorted walk"}, []storage.Sort{dateDesc}},
		{"broad with value, oldest first: sorted walk", []string{"Observation"}, storage.And{Exprs: []storage.Expr{tokenIs("code", "A"), valueBelow(90)}},
			func(r planRes) bool { return r.code == "A" && r.value < 90 }, []string{"sorted walk"}, []storage.Sort{dateAsc}},
		{"broad, every type, newest first", nil, tokenIs("code", "A"),
			func(r planRes) bool { return r.code == "A" }, []string{"sorted walk"}, []storage.Sort{dateDesc}},
		{"broad code, sparse flag, newest first: the flag drives", []string{"Observation"}, storage.And{Exprs: []storage.Expr{tokenIs("code", "A"), tokenIs("flag", "yes")}},
			func(r planRes) bool { return r.code == "A" && r.flag }, []string{"collect"}, []storage.Sort{dateDesc}},
		{"broad driver, no result, newest first: sorted walk, then collect", []string{"Observation"}, storage.And{Exprs: []storage.Expr{tokenIs("code", "A"), valueBelow(0)}},
			func(planRes) bool { return false }, []string{"sorted walk, then collect"}, []storage.Sort{dateDesc}},
		{"selective, newest first: collect", []string{"Observation"}, tokenIs("code", "R"),
			func(r planRes) bool { return r.code == "R" }, []string{"collect"}, []storage.Sort{dateDesc}},
		{"two types, newest first: collect", []string{"Condition", "Observation"}, tokenIs("code", "A"),
			func(r planRes) bool { return r.code == "A" }, []string{"collect"}, []storage.Sort{dateDesc}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var want []string
			for _, r := range model {
				if !r.deleted && (len(tc.types) == 0 || slices.Contains(tc.types, r.typ)) && tc.want(r) {
					want = append(want, r.typ+"/"+r.id)
				}
			}
			slices.Sort(want)
			if len(tc.sort) == 1 {
				desc := tc.sort[0].Desc
				byRef := map[string]planRes{}
				for _, r := range model {
					byRef[r.typ+"/"+r.id] = r
				}
				slices.SortStableFunc(want, func(a, b string) int {
					ka, oka := byRef[a].sortKey(desc)
					kb, okb := byRef[b].sortKey(desc)
					switch {
					case oka != okb && oka:
						return -1
					case oka != okb:
						return 1
					case ka == kb:
						return 0 // already in (type, id) order
					case ka < kb == desc:
						return 1
					}
					return -1
				})
			}
			for _, count := range []int{20, 333} {
				var got []string
				q := storage.Query{Types: tc.types, Filter: tc.filter, Sort: tc.sort, Count: count, Total: true}
				for pages := 0; ; pages++ {
					if pages > len(want)/count+1 {
						t.Fatalf("count %d: more pages than matches allow", count)
					}
					p, err := b.Search(t.Context(), q)
					if err != nil {
						t.Fatalf("count %d: Search: %v", count, err)
					}
					plans := tc.plans
					if count > 20 {
						plans = []string{"collect"}
					}
					if pages == 0 && !slices.Contains(plans, log.last()) {
						t.Errorf("count %d: first page planned as %q, want one of %q", count, log.last(), plans)
					}
					if p.Total != int64(len(want)) {
						t.Fatalf("count %d: Total = %d, want %d", count, p.Total, len(want))
					}
					if len(p.Records) > count || (p.Next != "" && len(p.Records) != count) {
						t.Fatalf("count %d: page of %d records with next=%t", count, len(p.Records), p.Next != "")
					}
					for _, r := range p.Records {
						if r.Deleted || r.VersionID != 1 && r.VersionID != 2 {
							t.Fatalf("count %d: record %s/%s deleted=%t version=%d", count, r.Type, r.ID, r.Deleted, r.VersionID)
						}
						got = append(got, r.Type+"/"+r.ID)
					}
					if p.Next == "" {
						break
					}
					q.Cursor = p.Next
				}
				if !slices.Equal(got, want) {
					t.Fatalf("count %d: got %d results, want %d\n got %.300v\nwant %.300v", count, len(got), len(want), got, want)
				}
			}
		})
	}
}

// TestSearchPlanCurrentVersion checks that the walk serves the current
// version's JSON, not the one it replaced.
func TestSearchPlanCurrentVersion(t *testing.T) {
	b := openT(t, t.TempDir())
	t.Cleanup(func() { b.Close() })
	model := loadPlanData(t, b)
	p, err := b.Search(t.Context(), storage.Query{Types: []string{"Observation"}, Filter: tokenIs("code", "B"), Count: 50})
	if err != nil {
		t.Fatal(err)
	}
	updated := map[string]bool{}
	for i, r := range model {
		if r.typ == "Observation" && i%41 == 0 && !r.deleted && r.code == "B" && i%2 == 0 {
			updated[r.id] = true
		}
	}
	seen := 0
	for _, r := range p.Records {
		want := fmt.Sprintf(`{"resourceType":"Observation","id":%q,"v":1}`, r.ID)
		if updated[r.ID] {
			want = fmt.Sprintf(`{"resourceType":"Observation","id":%q,"v":2}`, r.ID)
			seen++
		}
		if string(r.JSON) != want {
			t.Errorf("%s: JSON %s, want %s", r.ID, r.JSON, want)
		}
	}
	if seen == 0 {
		t.Fatalf("no updated resource on the first page: the test data no longer covers updates")
	}
}
