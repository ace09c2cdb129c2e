package mongo

import (
	"slices"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/anodyne-fhir/anodyne/storage"
)

// filterFields lists the fields a filter constrains conjunctively, with
// $elemMatch bodies on e reported as "e.<field>": the fields a query
// planner can bound an index scan on.
func filterFields(f bson.D) []string {
	var out []string
	for _, e := range f {
		switch {
		case e.Key == "$and":
			for _, sub := range e.Value.(bson.A) {
				out = append(out, filterFields(sub.(bson.D))...)
			}
		case strings.HasPrefix(e.Key, "$"):
			// $or/$nor do not bound a single index scan.
		default:
			out = append(out, e.Key)
			if d, ok := e.Value.(bson.D); ok && len(d) == 1 && d[0].Key == "$elemMatch" {
				for _, sub := range filterFields(d[0].Value.(bson.D)) {
					out = append(out, e.Key+"."+sub)
				}
			}
		}
	}
	return out
}

// usablePrefix returns the leading keys of an index that the filter binds.
func usablePrefix(keys bson.D, fields []string) []string {
	var p []string
	for _, k := range keys {
		if !slices.Contains(fields, k.Key) {
			break
		}
		p = append(p, k.Key)
	}
	return p
}

// TestIndexShapes checks, for each query shape the backend generates, that
// an index created at Open has a prefix bound by the filter and that the
// prefix reaches a selective field (more than the type): what a MongoDB
// planner needs to avoid a collection scan. It checks both translations
// (with and without $elemMatch) against the indexes the server reports.
func TestIndexShapes(t *testing.T) {
	b := fresh(t)
	cur, err := b.res.Indexes().List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var indexes []struct {
		Name string `bson:"name"`
		Key  bson.D `bson:"key"`
	}
	if err := cur.All(t.Context(), &indexes); err != nil {
		t.Fatal(err)
	}
	if len(indexes) < 2 {
		t.Fatalf("only %d indexes on resources after Open", len(indexes))
	}
	patient := storage.Match{Param: "subject", Kind: storage.KindReference, Cond: storage.And{Exprs: []storage.Expr{
		storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: "Patient"},
		storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: "p1"},
	}}}
	code := storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.And{Exprs: []storage.Expr{
		storage.Cmp{Field: storage.FieldSystem, Op: storage.OpEq, Value: "http://loinc.org"},
		storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "8867-4"},
	}}}
	shapes := []struct {
		name  string
		types []string
		expr  storage.Expr
		// rangeKey must be in the index prefix where $elemMatch makes the
		// range bound on one entry.
		rangeKey string
		// sort, when set, is a sort the server must read from an index in
		// order: right after the bound prefix ("-" for descending).
		sort string
	}{
		{"PatientObservationsByCode", []string{"Observation"}, storage.And{Exprs: []storage.Expr{patient, code}}, "", ""},
		{"CodeAndQuantityRange", []string{"Observation"}, storage.And{Exprs: []storage.Expr{code,
			storage.Match{Param: "value-quantity", Kind: storage.KindQuantity, Cond: storage.And{Exprs: []storage.Expr{
				storage.Cmp{Field: storage.FieldNumHigh, Op: storage.OpGe, Value: 100.0},
				storage.Cmp{Field: storage.FieldNumLow, Op: storage.OpLe, Value: 140.0},
			}}}}}, "e.nl", ""},
		{"LastUpdatedRange", []string{"Observation"}, storage.Match{Param: "_lastUpdated", Kind: storage.KindDate, Cond: storage.And{Exprs: []storage.Expr{
			storage.Cmp{Field: storage.FieldHigh, Op: storage.OpGe, Value: int64(1700000000000)},
			storage.Cmp{Field: storage.FieldLow, Op: storage.OpLt, Value: int64(1800000000000)},
		}}}, "e.lo", ""},
		{"ReferenceLookup", []string{"Observation"}, patient, "", ""},
		{"ReferenceLookupAnyType", nil, patient, "", ""},
		{"PainTrendNewestFirst", []string{"Observation"}, storage.And{Exprs: []storage.Expr{patient, code}}, "", "-o.date~date.h"},
	}
	for _, mode := range []bool{false, true} {
		tb := *b
		tb.elemMatch = mode
		for _, s := range shapes {
			t.Run(s.name+map[bool]string{false: "/superset", true: "/elemMatch"}[mode], func(t *testing.T) {
				root, err := tb.resolve(t.Context(), s.expr, 0)
				if err != nil {
					t.Fatal(err)
				}
				f, _, err := tb.filter(root)
				if err != nil {
					t.Fatal(err)
				}
				fields := filterFields(and(baseFilter(s.types), f))
				var best []string
				var bestName string
				for _, ix := range indexes {
					if p := usablePrefix(ix.Key, fields); len(p) > len(best) {
						best, bestName = p, ix.Name
					}
				}
				selective := slices.ContainsFunc(best, func(k string) bool { return k != "t" && k != "d" })
				if !selective {
					t.Fatalf("no index with a selective prefix for filter fields %v (best %q %v)", fields, bestName, best)
				}
				if mode && s.rangeKey != "" && !slices.Contains(best, s.rangeKey) {
					t.Fatalf("range on %s not bound by an index: fields %v, best %q %v", s.rangeKey, fields, bestName, best)
				}
				if s.sort != "" {
					field, dir := s.sort, int32(1)
					if field[0] == '-' {
						field, dir = field[1:], -1
					}
					sorted := slices.ContainsFunc(indexes, func(ix struct {
						Name string `bson:"name"`
						Key  bson.D `bson:"key"`
					}) bool {
						p := usablePrefix(ix.Key, fields)
						if !slices.ContainsFunc(p, func(k string) bool { return k != "t" && k != "d" }) || len(p) >= len(ix.Key) {
							return false
						}
						next := ix.Key[len(p)]
						d, _ := next.Value.(int32)
						return next.Key == field && d == dir
					})
					if !sorted {
						t.Fatalf("no index gives the order %s after a selective prefix of %v", s.sort, fields)
					}
				}
				t.Logf("fields %v -> index %s prefix %v", fields, bestName, best)
			})
		}
	}
}
