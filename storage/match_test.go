package storage

import (
	"errors"
	"slices"
	"testing"
)

func TestMatches(t *testing.T) {
	// A blood-pressure Observation: two composite components, a subject, a date.
	entries := []Entry{
		{Param: "code", Kind: KindToken, System: "http://loinc.org", Code: "85354-9", Text: "blood pressure"},
		{Param: "subject", Kind: KindReference, RefType: "Patient", RefID: "p1"},
		{Param: "date", Kind: KindDate, Low: 1000, High: 1999},
		{Param: "component-code-value-quantity", Kind: KindComposite, Parts: []Entry{
			{Kind: KindToken, System: "http://loinc.org", Code: "8480-6"},
			{Kind: KindQuantity, NumLow: 149.5, NumHigh: 150.5, Num: 150, System: "http://unitsofmeasure.org", Code: "mm[Hg]"},
		}},
		{Param: "component-code-value-quantity", Kind: KindComposite, Parts: []Entry{
			{Kind: KindToken, System: "http://loinc.org", Code: "8462-4"},
			{Kind: KindQuantity, NumLow: 79.5, NumHigh: 80.5, Num: 80, System: "http://unitsofmeasure.org", Code: "mm[Hg]"},
		}},
		{Param: "name", Kind: KindString, Text: "evelyne", Exact: "Évelyne"},
	}
	tok := func(code string) Expr { return Match{Param: "code", Kind: KindToken, Cond: Cmp{FieldCode, OpEq, code}} }
	component := func(code string, op Op, v float64) Expr {
		return Match{Param: "component-code-value-quantity", Kind: KindComposite, Cond: And{[]Expr{
			Part{0, Cmp{FieldCode, OpEq, code}},
			Part{1, Cmp{FieldNum, op, v}},
		}}}
	}
	tests := []struct {
		name string
		expr Expr
		want bool
	}{
		{"nil matches", nil, true},
		{"token code", tok("85354-9"), true},
		{"token other code", tok("8867-4"), false},
		{"kind must agree", Match{Param: "code", Kind: KindString, Cond: Cmp{FieldCode, OpEq, "85354-9"}}, false},
		{"reference", Match{Param: "subject", Kind: KindReference, Cond: And{[]Expr{Cmp{FieldRefType, OpEq, "Patient"}, Cmp{FieldRefID, OpEq, "p1"}}}}, true},
		{"date range overlaps", Match{Param: "date", Kind: KindDate, Cond: And{[]Expr{Cmp{FieldLow, OpLe, int64(1500)}, Cmp{FieldHigh, OpGe, int64(1500)}}}}, true},
		{"date range after", Match{Param: "date", Kind: KindDate, Cond: Cmp{FieldLow, OpGt, int64(1999)}}, false},
		// The two parts must hold on the same component: systolic 80 does not exist.
		{"systolic over 140", component("8480-6", OpGt, 140), true},
		{"systolic under 100 (diastolic is, but not the same component)", component("8480-6", OpLt, 100), false},
		{"diastolic under 100", component("8462-4", OpLt, 100), true},
		{"string prefix", Match{Param: "name", Kind: KindString, Cond: Cmp{FieldText, OpPrefix, "eve"}}, true},
		{"string contains", Match{Param: "name", Kind: KindString, Cond: Cmp{FieldText, OpContains, "lyn"}}, true},
		{"missing=false", Match{Param: "name", Kind: KindString}, true},
		{"missing=true", Not{Match{Param: "gender", Kind: KindToken}}, true},
		{"not", Not{tok("85354-9")}, false},
		{"or", Or{[]Expr{tok("x"), tok("85354-9")}}, true},
		{"empty or", Or{}, false},
		{"empty and", And{}, true},
		{"ids", IDs{[]string{"a", "obs1"}}, true},
		{"ids miss", IDs{[]string{"a"}}, false},
		{"part out of range", Match{Param: "component-code-value-quantity", Kind: KindComposite, Cond: Part{5, nil}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Matches(tc.expr, "obs1", entries)
			if err != nil {
				t.Fatalf("Matches(%s): %v", tc.expr, err)
			}
			if got != tc.want {
				t.Errorf("Matches(%s) = %v, want %v", tc.expr, got, tc.want)
			}
		})
	}
}

func TestMatchesUnsupported(t *testing.T) {
	for _, e := range []Expr{
		Chain{Param: "subject", Target: "Patient", Where: IDs{[]string{"x"}}},
		Has{Type: "Observation", Param: "subject", Where: nil},
		Cmp{FieldCode, OpEq, "x"},
		Match{Param: "date", Kind: KindDate, Cond: Cmp{FieldLow, OpEq, "not-a-number"}},
		Match{Param: "date", Kind: KindDate, Cond: Cmp{FieldLow, OpPrefix, int64(1)}},
	} {
		entries := []Entry{{Param: "date", Kind: KindDate, Low: 1, High: 2}}
		if _, err := Matches(e, "id", entries); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Matches(%s) error = %v, want ErrUnsupported", e, err)
		}
	}
}

func TestExprString(t *testing.T) {
	e := And{[]Expr{
		Match{Param: "code", Kind: KindToken, Cond: Cmp{FieldCode, OpEq, "72514-3"}},
		Match{Param: "date", Kind: KindDate, Cond: Cmp{FieldHigh, OpGe, int64(42)}},
		Not{IDs{[]string{"a"}}},
	}}
	want := `(And (Match code token (Cmp Code Eq "72514-3")) (Match date date (Cmp High Ge 42)) (Not (IDs "a")))`
	if got := e.String(); got != want {
		t.Errorf("String() = %s\nwant        %s", got, want)
	}
}

func TestParams(t *testing.T) {
	m := func(p string) Match { return Match{Param: p, Kind: KindToken} }
	for _, c := range []struct {
		e    Expr
		want []string
	}{
		{nil, []string{}},
		{IDs{IDs: []string{"a"}}, []string{}},
		{m("code"), []string{"code"}},
		{And{Exprs: []Expr{m("subject"), Or{Exprs: []Expr{m("date"), Not{Expr: m("code")}}}, m("code")}}, []string{"code", "date", "subject"}},
		{Chain{Param: "subject", Target: "Patient", Where: m("name")}, []string{"subject"}},
		{Has{Type: "Observation", Param: "subject", Where: m("code")}, []string{}},
	} {
		if got := Params(c.e); !slices.Equal(got, c.want) {
			t.Errorf("Params(%v) = %v, want %v", c.e, got, c.want)
		}
	}
}
