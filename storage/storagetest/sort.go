package storagetest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

func sortFixture(e *env) {
	day := func(d string) storage.Entry { return date("date", d+"T00:00:00Z", d+"T23:59:59.999Z") }
	e.put("Encounter", "e1", day("2020-01-01"), day("2025-01-01"))
	e.put("Encounter", "e2", day("2022-05-01"))
	e.put("Encounter", "e3", day("2021-01-01"), day("2023-01-01"))
	e.put("Encounter", "e4")
	e.put("Encounter", "e5", day("2022-05-01"))
	e.put("Encounter", "e6", date("date", "2021-06-01T00:00:00Z", "2024-06-01T00:00:00Z"))
	e.put("Procedure", "a0", day("2022-05-01"))
	e.put("Procedure", "zz")

	e.put("RiskAssessment", "r1", num("probability", 0.5, 0.5, 0.5), num("probability", 0.1, 0.1, 0.1))
	e.put("RiskAssessment", "r2", num("probability", 0.3, 0.3, 0.3))
	e.put("RiskAssessment", "r3")
	e.put("RiskAssessment", "r4", num("probability", 0.2, 0.2, 0.2), num("probability", 0.4, 0.4, 0.4))
	e.put("RiskAssessment", "r5", num("probability", 0.35, 0.35, 0.35))

	e.put("Patient", "a", str("name", "Zed"), str("name", "Adam"))
	e.put("Patient", "b", str("name", "Bob"))
	e.put("Patient", "c")
	e.put("Patient", "d", str("name", "carl"))

	e.put("Observation", "o1", tok("status", "", "A", ""), day("2020-01-01"))
	e.put("Observation", "o2", tok("status", "", "A", ""), day("2021-01-01"))
	e.put("Observation", "o3", tok("status", "", "B", ""), day("2019-01-01"))
	e.put("Observation", "o4", tok("status", "", "A", ""))
	e.put("Observation", "o5", day("2022-01-01"))

	// References sort by "Type/id", or by URL when they have no type.
	e.put("Communication", "c1", ref("subject", "Patient", "p2"))
	e.put("Communication", "c2", ref("subject", "Patient", "p1"), ref("subject", "Group", "g9"))
	e.put("Communication", "c3", storage.Entry{Param: "subject", Kind: storage.KindReference, RefURL: "http://other.org/fhir/Patient/1"})
	e.put("Communication", "c4")
	e.put("Communication", "c5", ref("subject", "Patient", "p10"))

	e.put("ValueSet", "v1", uri("url", "urn:b"))
	e.put("ValueSet", "v2", uri("url", "urn:a"))
	e.put("ValueSet", "v3")
}

var sortTable = []struct {
	name   string
	types  []string
	filter storage.Expr
	sort   []storage.Sort
	want   []string
}{
	{"DateAscByLowest", []string{"Encounter", "Procedure"}, nil, []storage.Sort{{Param: "date", Kind: dk}},
		[]string{"Encounter/e1", "Encounter/e3", "Encounter/e6", "Encounter/e2", "Encounter/e5", "Procedure/a0", "Encounter/e4", "Procedure/zz"}},
	{"DateDescByHighest", []string{"Encounter", "Procedure"}, nil, []storage.Sort{{Param: "date", Kind: dk, Desc: true}},
		[]string{"Encounter/e1", "Encounter/e6", "Encounter/e3", "Encounter/e2", "Encounter/e5", "Procedure/a0", "Encounter/e4", "Procedure/zz"}},
	{"DateWithFilter", []string{"Encounter"}, storage.IDs{IDs: []string{"e2", "e3", "e4", "e1"}}, []storage.Sort{{Param: "date", Kind: dk, Desc: true}},
		[]string{"Encounter/e1", "Encounter/e3", "Encounter/e2", "Encounter/e4"}},
	{"NumberAsc", []string{"RiskAssessment"}, nil, []storage.Sort{{Param: "probability", Kind: nk}},
		[]string{"RiskAssessment/r1", "RiskAssessment/r4", "RiskAssessment/r2", "RiskAssessment/r5", "RiskAssessment/r3"}},
	{"NumberDesc", []string{"RiskAssessment"}, nil, []storage.Sort{{Param: "probability", Kind: nk, Desc: true}},
		[]string{"RiskAssessment/r1", "RiskAssessment/r4", "RiskAssessment/r5", "RiskAssessment/r2", "RiskAssessment/r3"}},
	{"StringAsc", []string{"Patient"}, nil, []storage.Sort{{Param: "name", Kind: sk}},
		[]string{"Patient/a", "Patient/b", "Patient/d", "Patient/c"}},
	{"StringDesc", []string{"Patient"}, nil, []storage.Sort{{Param: "name", Kind: sk, Desc: true}},
		[]string{"Patient/a", "Patient/d", "Patient/b", "Patient/c"}},
	{"TokenAsc", []string{"Observation"}, nil, []storage.Sort{{Param: "status", Kind: tk}},
		[]string{"Observation/o1", "Observation/o2", "Observation/o4", "Observation/o3", "Observation/o5"}},
	{"TokenDesc", []string{"Observation"}, nil, []storage.Sort{{Param: "status", Kind: tk, Desc: true}},
		[]string{"Observation/o3", "Observation/o1", "Observation/o2", "Observation/o4", "Observation/o5"}},
	{"URIAsc", []string{"ValueSet"}, nil, []storage.Sort{{Param: "url", Kind: uk}},
		[]string{"ValueSet/v2", "ValueSet/v1", "ValueSet/v3"}},
	{"ReferenceAsc", []string{"Communication"}, nil, []storage.Sort{{Param: "subject", Kind: rk}},
		[]string{"Communication/c2", "Communication/c5", "Communication/c1", "Communication/c3", "Communication/c4"}},
	{"ReferenceDesc", []string{"Communication"}, nil, []storage.Sort{{Param: "subject", Kind: rk, Desc: true}},
		[]string{"Communication/c3", "Communication/c1", "Communication/c5", "Communication/c2", "Communication/c4"}},
	{"TwoKeys", []string{"Observation"}, nil, []storage.Sort{{Param: "status", Kind: tk}, {Param: "date", Kind: dk, Desc: true}},
		[]string{"Observation/o2", "Observation/o1", "Observation/o4", "Observation/o3", "Observation/o5"}},
	{"NoSortIsTypeThenID", []string{"Procedure", "Encounter"}, nil, nil,
		[]string{"Encounter/e1", "Encounter/e2", "Encounter/e3", "Encounter/e4", "Encounter/e5", "Encounter/e6", "Procedure/a0", "Procedure/zz"}},
}

var sortCases = []testCase{
	{"Orders", func(t *testing.T, e *env) {
		sortFixture(e)
		for _, c := range sortTable {
			t.Run(c.name, func(t *testing.T) {
				for _, count := range []int{100, 3, 1} {
					q := storage.Query{Types: c.types, Filter: c.filter, Sort: c.sort, Count: count}
					var got []string
					for range 100 {
						p, err := e.b.Search(e.ctx, q)
						if err != nil {
							e.unsupported(t, err, "sort %v", c.sort)
							t.Fatalf("Search sorted by %v: %v", c.sort, err)
						}
						got = append(got, refs(p.Records)...)
						if p.Next == "" {
							break
						}
						q.Cursor = p.Next
					}
					wantList(t, got, c.want, fmt.Sprintf("sorted by %v, pages of %d", c.sort, count))
				}
			})
		}
	}},
}

var pagingCases = []testCase{
	{"NoGapsNoDuplicates", func(t *testing.T, e *env) {
		var want []string
		for i := range 23 {
			id := fmt.Sprintf("b%02d", i)
			e.put("Basic", id, tok("code", "", "x", ""))
			want = append(want, "Basic/"+id)
		}
		e.put("Patient", "p", tok("code", "", "x", ""))
		want = append(want, "Patient/p")
		for _, count := range []int{1, 5, 24, 25} {
			got := e.searchAll(storage.Query{Filter: match("code", tk, nil), Count: count})
			wantList(t, got, want, fmt.Sprintf("pages of %d", count))
		}
	}},
	{"WritesBetweenPages", func(t *testing.T, e *env) {
		pagedWithWrites(t, e, nil)
	}},
	{"SortedWritesBetweenPages", func(t *testing.T, e *env) {
		pagedWithWrites(t, e, []storage.Sort{{Param: "date", Kind: dk, Desc: true}})
	}},
	{"BadCursor", func(t *testing.T, e *env) {
		e.put("Basic", "a")
		for _, c := range []string{"garbage", "!!!", "eyJ4IjoxfQ"} {
			_, err := e.b.Search(e.ctx, storage.Query{Count: 10, Cursor: c})
			wantErr(t, err, storage.ErrBadCursor, fmt.Sprintf("Search cursor %q", c))
		}
	}},
}

// pagedWithWrites pages through 20 resources while creating, updating and
// re-indexing others between pages: every original resource that is not
// moved must appear exactly once, and nothing twice.
func pagedWithWrites(t *testing.T, e *env, sort []storage.Sort) {
	day := func(i int) storage.Entry {
		d := fmt.Sprintf("2020-01-%02dT00:00:00Z", 1+i%4) // many ties
		return date("date", d, d)
	}
	var want []string
	for i := range 20 {
		id := fmt.Sprintf("b%02d", i)
		e.put("Basic", id, day(i))
		want = append(want, "Basic/"+id)
	}
	q := storage.Query{Types: []string{"Basic"}, Sort: sort, Count: 4}
	seen := map[string]int{}
	for page := 0; ; page++ {
		if page > 50 {
			t.Fatal("paging does not end")
		}
		p := e.search(q)
		for _, r := range refs(p.Records) {
			seen[r]++
		}
		if p.Next == "" {
			break
		}
		// New resources before and after the cursor, and an update that
		// keeps the sort value of an original resource.
		e.put("Basic", fmt.Sprintf("a%02d", page), day(page))
		e.put("Basic", fmt.Sprintf("z%02d", page), day(page+1))
		e.put("Basic", fmt.Sprintf("b%02d", 19-page), day(19-page))
		q.Cursor = p.Next
	}
	for r, n := range seen {
		if n > 1 {
			t.Errorf("%s returned %d times", r, n)
		}
	}
	for _, r := range want {
		if seen[r] != 1 {
			t.Errorf("%s returned %d times, want once", r, seen[r])
		}
	}
	if t.Failed() {
		keys := make([]string, 0, len(seen))
		for k := range seen {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		t.Logf("seen: %v", keys)
	}
}
