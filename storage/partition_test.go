package storage_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

var testPartitioning = storage.Partitioning{Links: map[string][]storage.PartitionLink{
	"Observation": {{Param: "subject"}, {Param: "patient", OnlyPatient: true}, {Param: "performer"}},
	"Patient":     {{Param: "link", OnlyPatient: true}},
}}

func ref(param, typ, id string) storage.Entry {
	return storage.Entry{Param: param, Kind: storage.KindReference, RefType: typ, RefID: id}
}

func refTo(typ, id string) storage.Expr {
	return storage.And{Exprs: []storage.Expr{
		storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: typ},
		storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: id},
	}}
}

func bareID(id string) storage.Expr {
	return storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: id}
}

func TestPartitionKey(t *testing.T) {
	for _, tc := range []struct {
		typ, id string
		es      []storage.Entry
		want    string
	}{
		{"Patient", "p1", []storage.Entry{ref("link", "Patient", "p2")}, "Patient/p1"},
		{"Observation", "o1", []storage.Entry{ref("subject", "Patient", "p1"), ref("patient", "Patient", "p1")}, "Patient/p1"},
		{"Observation", "o2", []storage.Entry{ref("subject", "Patient", "p1"), ref("performer", "Patient", "p2")}, storage.PartitionShared},
		{"Observation", "o3", []storage.Entry{ref("subject", "Group", "g1"), ref("performer", "Practitioner", "d1")}, "Observation/o3"},
		{"Observation", "o4", []storage.Entry{ref("encounter", "Patient", "p9"), ref("subject", "Patient", "p1")}, "Patient/p1"},
		{"Organization", "org", []storage.Entry{ref("partof", "Organization", "x")}, "Organization/org"},
		{"Observation", "o5", []storage.Entry{{Param: "subject", Kind: storage.KindReference, RefURL: "https://other.example/Patient/1"}}, "Observation/o5"},
	} {
		if got := testPartitioning.Key(tc.typ, tc.id, tc.es); got != tc.want {
			t.Errorf("Key(%s/%s) = %q, want %q", tc.typ, tc.id, got, tc.want)
		}
	}
}

func TestPartitionTargets(t *testing.T) {
	m := func(param string, cond storage.Expr) storage.Expr {
		return storage.Match{Param: param, Kind: storage.KindReference, Cond: cond}
	}
	code := storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "72514-3"}}
	for _, tc := range []struct {
		name  string
		types []string
		f     storage.Expr
		want  []string
	}{
		{"pain trend", []string{"Observation"}, storage.And{Exprs: []storage.Expr{m("patient", bareID("p1")), code}}, []string{"Patient/p1", storage.PartitionShared}},
		{"typed subject", []string{"Observation"}, m("subject", refTo("Patient", "p1")), []string{"Patient/p1", storage.PartitionShared}},
		{"bare subject may be a Group", []string{"Observation"}, m("subject", bareID("p1")), nil},
		{"subject of a Group", []string{"Observation"}, m("subject", refTo("Group", "g1")), nil},
		{"two patients", []string{"Observation"}, m("patient", storage.Or{Exprs: []storage.Expr{bareID("p1"), bareID("p2")}}), []string{"Patient/p1", "Patient/p2", storage.PartitionShared}},
		{"compartment", []string{"Observation"}, storage.Or{Exprs: []storage.Expr{m("subject", refTo("Patient", "p1")), m("performer", refTo("Patient", "p1"))}}, []string{"Patient/p1", storage.PartitionShared}},
		{"code alone", []string{"Observation"}, code, nil},
		{"or with an unpinned branch", []string{"Observation"}, storage.Or{Exprs: []storage.Expr{m("patient", bareID("p1")), code}}, nil},
		{"negated", []string{"Observation"}, storage.Not{Expr: m("patient", bareID("p1"))}, nil},
		{"patient by id", []string{"Patient"}, storage.IDs{IDs: []string{"p1"}}, []string{"Patient/p1"}},
		{"patient compartment of a patient", []string{"Patient"}, storage.Or{Exprs: []storage.Expr{storage.IDs{IDs: []string{"p1"}}, m("link", refTo("Patient", "p1"))}}, nil},
		{"not a link param", []string{"Observation"}, m("encounter", refTo("Patient", "p1")), nil},
		{"every type", nil, m("patient", bareID("p1")), nil},
	} {
		got := testPartitioning.Targets(storage.Query{Types: tc.types, Filter: tc.f})
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: Targets = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestPartitionTargetsSound checks the property the backends rely on, by
// brute force over random resources and queries: every resource that
// matches a query (storage.Matches, the reference semantics) has a Key
// among the query's Targets whenever Targets narrows the query at all.
func TestPartitionTargetsSound(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	patients := []string{"p1", "p2", "p3"}
	types := []string{"Patient", "Group", "Practitioner"}
	params := []string{"subject", "patient", "performer", "encounter", "link"}
	randomRef := func() storage.Entry {
		typ := types[rng.IntN(len(types))]
		return ref(params[rng.IntN(len(params))], typ, patients[rng.IntN(len(patients))])
	}
	var randomExpr func(depth int) storage.Expr
	randomExpr = func(depth int) storage.Expr {
		switch n := rng.IntN(6); {
		case depth > 2 || n < 3:
			var cond storage.Expr
			if rng.IntN(2) == 0 {
				cond = bareID(patients[rng.IntN(len(patients))])
			} else {
				cond = refTo(types[rng.IntN(len(types))], patients[rng.IntN(len(patients))])
			}
			return storage.Match{Param: params[rng.IntN(len(params))], Kind: storage.KindReference, Cond: cond}
		case n == 3:
			return storage.And{Exprs: []storage.Expr{randomExpr(depth + 1), randomExpr(depth + 1)}}
		case n == 4:
			return storage.Or{Exprs: []storage.Expr{randomExpr(depth + 1), randomExpr(depth + 1)}}
		default:
			return storage.IDs{IDs: []string{patients[rng.IntN(len(patients))]}}
		}
	}
	narrowed := 0
	for i := 0; i < 3000; i++ {
		typ := []string{"Observation", "Patient"}[rng.IntN(2)]
		id := patients[rng.IntN(len(patients))]
		es := make([]storage.Entry, rng.IntN(4))
		for j := range es {
			es[j] = randomRef()
		}
		q := storage.Query{Types: []string{typ}, Filter: randomExpr(0)}
		ok, err := storage.Matches(q.Filter, id, es)
		if err != nil {
			t.Fatal(err)
		}
		targets := testPartitioning.Targets(q)
		if targets != nil {
			narrowed++
		}
		if ok && targets != nil {
			if key := testPartitioning.Key(typ, id, es); !slices.Contains(targets, key) {
				t.Fatalf("%s/%s %v matches %v but its partition %q is not in %q", typ, id, es, q.Filter, key, targets)
			}
		}
	}
	if narrowed < 300 {
		t.Fatalf("only %d of 3000 random queries were narrowed: the property was barely exercised", narrowed)
	}
	t.Logf("%d of 3000 queries narrowed", narrowed)
}
