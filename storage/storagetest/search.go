package storagetest

import (
	"fmt"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

const (
	loinc  = "http://loinc.org"
	ucum   = "http://unitsofmeasure.org"
	gender = "http://hl7.org/fhir/administrative-gender"
)

// searchFixture writes a small store with entries of every kind. The
// comments give what each query below depends on.
func searchFixture(e *env) {
	e.put("Patient", "p1",
		str("name", "Peter"), str("name", "Pete"),
		tok("gender", gender, "male", "male"),
		tok("identifier", "urn:mrn", "111", ""),
		date("birthdate", "1970-01-01T00:00:00Z", "1970-01-01T23:59:59.999Z"),
	)
	e.put("Patient", "p2",
		str("name", "Paula"),
		tok("gender", gender, "female", "female"),
		tok("identifier", "urn:mrn", "222", ""),
		tok("identifier", "urn:other", "111", ""),
		date("birthdate", "1985-06-15T00:00:00Z", "1985-06-15T23:59:59.999Z"),
	)
	e.put("Patient", "p3",
		str("name", "Pedro"),
		date("birthdate", "2000-01-01T00:00:00Z", "2000-12-31T23:59:59.999Z"),
	)
	e.put("Observation", "o1",
		ref("subject", "Patient", "p1"),
		tok("code", loinc, "1234-5", "glucose"),
		qty("value-quantity", 5.4, ucum, "mmol/L"),
		date("date", "2024-01-01T10:00:00Z", "2024-01-01T10:00:00Z"),
		comp("code-value-quantity", tok("", loinc, "1234-5", ""), qty("", 5.4, ucum, "mmol/L")),
	)
	e.put("Observation", "o2",
		ref("subject", "Patient", "p2"),
		tok("code", loinc, "1234-5", "glucose fasting"),
		qty("value-quantity", 7.0, ucum, "mmol/L"),
		storage.Entry{Param: "based-on", Kind: storage.KindReference, RefURL: "http://other.org/fhir/ServiceRequest/9"},
		comp("code-value-quantity", tok("", loinc, "1234-5", ""), qty("", 7.0, ucum, "mmol/L")),
	)
	e.put("Observation", "o3",
		ref("subject", "Patient", "p1"),
		tok("code", loinc, "8867-4", "heart rate"),
		qty("value-quantity", 80, ucum, "/min"),
		storage.Entry{Param: "performer", Kind: storage.KindReference, System: "urn:npi", Code: "42"},
		// Two components: a query on both parts must hold on one of them.
		comp("component-code-value-quantity", tok("", loinc, "8867-4", ""), qty("", 80, ucum, "/min")),
		comp("component-code-value-quantity", tok("", loinc, "1111-1", ""), qty("", 5, ucum, "/min")),
		// Two separate periods: January and March 2020.
		date("period", "2020-01-01T00:00:00Z", "2020-01-31T23:59:59.999Z"),
		date("period", "2020-03-01T00:00:00Z", "2020-03-31T23:59:59.999Z"),
	)
	e.put("RiskAssessment", "r1", num("probability", 0.25, 0.245, 0.255))
	e.put("RiskAssessment", "r2", num("probability", 0.8, 0.75, 0.85))
	e.put("ValueSet", "v1", uri("url", "http://example.org/vs/a"))
	e.put("ValueSet", "v2", uri("url", "http://example.org/vs/b"))
	e.put("ValueSet", "v3", uri("url", "urn:oid:1.2.3"))
}

type searchCase struct {
	name   string
	types  []string
	filter storage.Expr
	want   []string // in type, id order
}

var (
	tk = storage.KindToken
	sk = storage.KindString
	rk = storage.KindReference
	dk = storage.KindDate
	nk = storage.KindNumber
	qk = storage.KindQuantity
	uk = storage.KindURI
	ck = storage.KindComposite
)

var searchTable = []searchCase{
	// Match with nil Cond and Not.
	{"MatchAny", nil, match("gender", tk, nil), []string{"Patient/p1", "Patient/p2"}},
	{"NotMatchAny", []string{"Patient"}, storage.Not{Expr: match("gender", tk, nil)}, []string{"Patient/p3"}},
	{"NotAcrossTypes", []string{"Patient", "RiskAssessment"}, storage.Not{Expr: match("name", sk, nil)},
		[]string{"RiskAssessment/r1", "RiskAssessment/r2"}},
	{"MatchOtherKindIsNoMatch", nil, match("gender", sk, nil), nil},

	// String.
	{"StringTextEq", nil, match("name", sk, cmp(storage.FieldText, storage.OpEq, "peter")), []string{"Patient/p1"}},
	{"StringExactEq", nil, match("name", sk, cmp(storage.FieldExact, storage.OpEq, "Paula")), []string{"Patient/p2"}},
	{"StringExactIsCaseSensitive", nil, match("name", sk, cmp(storage.FieldExact, storage.OpEq, "paula")), nil},
	{"StringTextPrefix", nil, match("name", sk, cmp(storage.FieldText, storage.OpPrefix, "pe")), []string{"Patient/p1", "Patient/p3"}},
	{"StringPrefixIsCaseSensitive", nil, match("name", sk, cmp(storage.FieldExact, storage.OpPrefix, "pe")), nil},
	{"StringPrefixIsLiteral", nil, match("name", sk, cmp(storage.FieldText, storage.OpPrefix, "p%")), nil},
	{"StringContains", nil, match("name", sk, cmp(storage.FieldText, storage.OpContains, "ul")), []string{"Patient/p2"}},
	{"StringContainsIsLiteral", nil, match("name", sk, cmp(storage.FieldText, storage.OpContains, "_")), nil},
	{"StringNe", nil, match("name", sk, cmp(storage.FieldText, storage.OpNe, "peter")), []string{"Patient/p1", "Patient/p2", "Patient/p3"}},
	{"StringNeEveryEntry", []string{"Patient"}, storage.Not{Expr: match("name", sk, cmp(storage.FieldText, storage.OpEq, "peter"))},
		[]string{"Patient/p2", "Patient/p3"}},
	{"StringLt", nil, match("name", sk, cmp(storage.FieldText, storage.OpLt, "pedro")), []string{"Patient/p2"}},
	{"StringLe", nil, match("name", sk, cmp(storage.FieldText, storage.OpLe, "pedro")), []string{"Patient/p2", "Patient/p3"}},
	{"StringGt", nil, match("name", sk, cmp(storage.FieldText, storage.OpGt, "pete")), []string{"Patient/p1"}},
	{"StringGe", nil, match("name", sk, cmp(storage.FieldText, storage.OpGe, "pete")), []string{"Patient/p1"}},

	// Token.
	{"TokenCode", nil, match("gender", tk, cmp(storage.FieldCode, storage.OpEq, "male")), []string{"Patient/p1"}},
	{"TokenSystemAndCodeOnOneEntry", nil, match("identifier", tk, and(
		cmp(storage.FieldSystem, storage.OpEq, "urn:mrn"), cmp(storage.FieldCode, storage.OpEq, "111"))), []string{"Patient/p1"}},
	{"TokenCodeAnySystem", nil, match("identifier", tk, cmp(storage.FieldCode, storage.OpEq, "111")), []string{"Patient/p1", "Patient/p2"}},
	{"TokenSystemOnly", nil, match("identifier", tk, cmp(storage.FieldSystem, storage.OpEq, "urn:other")), []string{"Patient/p2"}},
	{"TokenTextContains", nil, match("code", tk, cmp(storage.FieldText, storage.OpContains, "gluc")), []string{"Observation/o1", "Observation/o2"}},
	{"TokenTextPrefix", nil, match("code", tk, cmp(storage.FieldText, storage.OpPrefix, "heart")), []string{"Observation/o3"}},
	{"TokenCodeNe", nil, match("code", tk, cmp(storage.FieldCode, storage.OpNe, "1234-5")), []string{"Observation/o3"}},
	{"TokenEntryNot", nil, match("code", tk, storage.Not{Expr: cmp(storage.FieldCode, storage.OpEq, "1234-5")}), []string{"Observation/o3"}},
	{"TokenEntryOr", nil, match("code", tk, or(cmp(storage.FieldCode, storage.OpEq, "8867-4"), cmp(storage.FieldText, storage.OpEq, "glucose"))),
		[]string{"Observation/o1", "Observation/o3"}},

	// Reference.
	{"ReferenceTypeID", nil, match("subject", rk, and(cmp(storage.FieldRefType, storage.OpEq, "Patient"), cmp(storage.FieldRefID, storage.OpEq, "p1"))),
		[]string{"Observation/o1", "Observation/o3"}},
	{"ReferenceIDOnly", nil, match("subject", rk, cmp(storage.FieldRefID, storage.OpEq, "p2")), []string{"Observation/o2"}},
	{"ReferenceURL", nil, match("based-on", rk, cmp(storage.FieldRefURL, storage.OpEq, "http://other.org/fhir/ServiceRequest/9")), []string{"Observation/o2"}},
	{"ReferenceURLPrefix", nil, match("based-on", rk, cmp(storage.FieldRefURL, storage.OpPrefix, "http://other.org/")), []string{"Observation/o2"}},
	{"ReferenceIdentifier", nil, match("performer", rk, and(cmp(storage.FieldSystem, storage.OpEq, "urn:npi"), cmp(storage.FieldCode, storage.OpEq, "42"))),
		[]string{"Observation/o3"}},

	// Date.
	{"DateLowGe", nil, match("birthdate", dk, cmp(storage.FieldLow, storage.OpGe, ms("1980-01-01T00:00:00Z"))), []string{"Patient/p2", "Patient/p3"}},
	{"DateHighLt", nil, match("birthdate", dk, cmp(storage.FieldHigh, storage.OpLt, ms("1980-01-01T00:00:00Z"))), []string{"Patient/p1"}},
	{"DateLowEq", nil, match("birthdate", dk, cmp(storage.FieldLow, storage.OpEq, ms("1985-06-15T00:00:00Z"))), []string{"Patient/p2"}},
	{"DateLowNe", nil, match("birthdate", dk, cmp(storage.FieldLow, storage.OpNe, ms("1985-06-15T00:00:00Z"))), []string{"Patient/p1", "Patient/p3"}},
	{"DateHighLe", nil, match("birthdate", dk, cmp(storage.FieldHigh, storage.OpLe, ms("1985-06-15T23:59:59.999Z"))), []string{"Patient/p1", "Patient/p2"}},
	{"DateLowGt", nil, match("birthdate", dk, cmp(storage.FieldLow, storage.OpGt, ms("1985-06-15T00:00:00Z"))), []string{"Patient/p3"}},
	{"DateLowLe", nil, match("birthdate", dk, cmp(storage.FieldLow, storage.OpLe, ms("1970-01-01T00:00:00Z"))), []string{"Patient/p1"}},
	{"DateHighGe", nil, match("birthdate", dk, cmp(storage.FieldHigh, storage.OpGe, ms("2000-12-31T23:59:59.999Z"))), []string{"Patient/p3"}},
	{"DateContainsInstant", nil, match("birthdate", dk, and(
		cmp(storage.FieldLow, storage.OpLe, ms("2000-06-01T00:00:00Z")), cmp(storage.FieldHigh, storage.OpGe, ms("2000-06-01T00:00:00Z")))),
		[]string{"Patient/p3"}},
	// February falls between the two periods: no single entry contains it...
	{"DateSameEntry", nil, match("period", dk, and(
		cmp(storage.FieldLow, storage.OpLe, ms("2020-02-15T00:00:00Z")), cmp(storage.FieldHigh, storage.OpGe, ms("2020-02-15T00:00:00Z")))),
		nil},
	// ...but two Matches may hold on different entries.
	{"DateDifferentEntries", nil, and(
		match("period", dk, cmp(storage.FieldLow, storage.OpLe, ms("2020-02-15T00:00:00Z"))),
		match("period", dk, cmp(storage.FieldHigh, storage.OpGe, ms("2020-02-15T00:00:00Z")))),
		[]string{"Observation/o3"}},

	// Number.
	{"NumberEq", nil, match("probability", nk, cmp(storage.FieldNum, storage.OpEq, 0.25)), []string{"RiskAssessment/r1"}},
	{"NumberNe", nil, match("probability", nk, cmp(storage.FieldNum, storage.OpNe, 0.25)), []string{"RiskAssessment/r2"}},
	{"NumberGt", nil, match("probability", nk, cmp(storage.FieldNum, storage.OpGt, 0.25)), []string{"RiskAssessment/r2"}},
	{"NumberGe", nil, match("probability", nk, cmp(storage.FieldNum, storage.OpGe, 0.25)), []string{"RiskAssessment/r1", "RiskAssessment/r2"}},
	{"NumberLt", nil, match("probability", nk, cmp(storage.FieldNum, storage.OpLt, 0.8)), []string{"RiskAssessment/r1"}},
	{"NumberLe", nil, match("probability", nk, cmp(storage.FieldNum, storage.OpLe, 0.8)), []string{"RiskAssessment/r1", "RiskAssessment/r2"}},
	{"NumberRange", nil, match("probability", nk, and(
		cmp(storage.FieldNumLow, storage.OpLe, 0.8), cmp(storage.FieldNumHigh, storage.OpGe, 0.8))), []string{"RiskAssessment/r2"}},
	{"NumberRangeMiss", nil, match("probability", nk, and(
		cmp(storage.FieldNumLow, storage.OpLe, 0.5), cmp(storage.FieldNumHigh, storage.OpGe, 0.5))), nil},

	// Quantity.
	{"QuantityValueAndUnit", nil, match("value-quantity", qk, and(
		cmp(storage.FieldNum, storage.OpGe, 7.0), cmp(storage.FieldCode, storage.OpEq, "mmol/L"))), []string{"Observation/o2"}},
	{"QuantitySystem", nil, match("value-quantity", qk, cmp(storage.FieldSystem, storage.OpEq, ucum)),
		[]string{"Observation/o1", "Observation/o2", "Observation/o3"}},
	{"QuantityRange", nil, match("value-quantity", qk, and(
		cmp(storage.FieldNumLow, storage.OpLe, 5.4), cmp(storage.FieldNumHigh, storage.OpGe, 5.4))), []string{"Observation/o1"}},
	{"QuantityUnitNe", nil, match("value-quantity", qk, cmp(storage.FieldCode, storage.OpNe, "mmol/L")), []string{"Observation/o3"}},

	// URI.
	{"URIEq", nil, match("url", uk, cmp(storage.FieldExact, storage.OpEq, "http://example.org/vs/a")), []string{"ValueSet/v1"}},
	{"URIPrefix", nil, match("url", uk, cmp(storage.FieldExact, storage.OpPrefix, "http://example.org/vs/")), []string{"ValueSet/v1", "ValueSet/v2"}},
	{"URINe", nil, match("url", uk, cmp(storage.FieldExact, storage.OpNe, "urn:oid:1.2.3")), []string{"ValueSet/v1", "ValueSet/v2"}},
	{"URIContains", nil, match("url", uk, cmp(storage.FieldExact, storage.OpContains, "oid")), []string{"ValueSet/v3"}},

	// Composite: both parts must hold on the same composite entry.
	{"CompositeParts", nil, match("code-value-quantity", ck, and(
		storage.Part{Index: 0, Cond: cmp(storage.FieldCode, storage.OpEq, "1234-5")},
		storage.Part{Index: 1, Cond: cmp(storage.FieldNum, storage.OpGt, 6.0)})), []string{"Observation/o2"}},
	{"CompositeSameEntry", nil, match("component-code-value-quantity", ck, and(
		storage.Part{Index: 0, Cond: cmp(storage.FieldCode, storage.OpEq, "1111-1")},
		storage.Part{Index: 1, Cond: cmp(storage.FieldNum, storage.OpGt, 50.0)})), nil},
	{"CompositeOtherEntry", nil, match("component-code-value-quantity", ck, and(
		storage.Part{Index: 0, Cond: cmp(storage.FieldCode, storage.OpEq, "8867-4")},
		storage.Part{Index: 1, Cond: cmp(storage.FieldNum, storage.OpGt, 50.0)})), []string{"Observation/o3"}},
	{"CompositePartIndexMatters", nil, match("code-value-quantity", ck,
		storage.Part{Index: 1, Cond: cmp(storage.FieldCode, storage.OpEq, "1234-5")}), nil},
	{"CompositeSinglePart", nil, match("code-value-quantity", ck,
		storage.Part{Index: 1, Cond: cmp(storage.FieldCode, storage.OpEq, "mmol/L")}), []string{"Observation/o1", "Observation/o2"}},
	{"CompositeTwoConditionsOnOnePart", nil, match("code-value-quantity", ck, and(
		storage.Part{Index: 1, Cond: cmp(storage.FieldNum, storage.OpGt, 5.0)},
		storage.Part{Index: 1, Cond: cmp(storage.FieldNum, storage.OpLt, 6.0)})), []string{"Observation/o1"}},
	{"CompositeValueFirstSameEntry", nil, match("component-code-value-quantity", ck, and(
		storage.Part{Index: 1, Cond: cmp(storage.FieldNum, storage.OpLt, 10.0)},
		storage.Part{Index: 0, Cond: cmp(storage.FieldCode, storage.OpEq, "8867-4")})), nil},
	{"CompositeNestedAnd", nil, match("component-code-value-quantity", ck, and(
		storage.Part{Index: 0, Cond: cmp(storage.FieldCode, storage.OpEq, "1111-1")},
		and(storage.Part{Index: 1, Cond: cmp(storage.FieldNum, storage.OpLt, 10.0)}))), []string{"Observation/o3"}},
	{"CompositeOrOfParts", nil, match("component-code-value-quantity", ck, or(
		storage.Part{Index: 0, Cond: cmp(storage.FieldCode, storage.OpEq, "1111-1")},
		storage.Part{Index: 1, Cond: cmp(storage.FieldNum, storage.OpGt, 1000.0)})), []string{"Observation/o3"}},
	{"CompositePartAndNotPartSameEntry", nil, match("component-code-value-quantity", ck, and(
		storage.Part{Index: 0, Cond: cmp(storage.FieldCode, storage.OpEq, "8867-4")},
		storage.Not{Expr: storage.Part{Index: 1, Cond: cmp(storage.FieldNum, storage.OpGt, 50.0)}})), nil},
	{"CompositePartAndNotPart", nil, match("component-code-value-quantity", ck, and(
		storage.Part{Index: 0, Cond: cmp(storage.FieldCode, storage.OpEq, "1111-1")},
		storage.Not{Expr: storage.Part{Index: 1, Cond: cmp(storage.FieldNum, storage.OpGt, 50.0)}})), []string{"Observation/o3"}},
	{"CompositePartPresence", nil, match("code-value-quantity", ck, and(
		storage.Part{Index: 1}, storage.Part{Index: 0, Cond: cmp(storage.FieldCode, storage.OpEq, "1234-5")})),
		[]string{"Observation/o1", "Observation/o2"}},
	{"CompositeMissingPart", nil, match("code-value-quantity", ck, storage.Part{Index: 2}), nil},

	// IDs.
	{"IDs", nil, storage.IDs{IDs: []string{"p1", "o2", "missing"}}, []string{"Observation/o2", "Patient/p1"}},
	{"IDsWithType", []string{"Patient"}, storage.IDs{IDs: []string{"p1", "o2"}}, []string{"Patient/p1"}},
	{"IDsEmpty", nil, storage.IDs{}, nil},

	// And / Or / Not at resource level.
	{"AndEmpty", []string{"Patient"}, and(), []string{"Patient/p1", "Patient/p2", "Patient/p3"}},
	{"OrEmpty", nil, or(), nil},
	{"And", nil, and(match("gender", tk, nil), match("name", sk, cmp(storage.FieldText, storage.OpPrefix, "pa"))), []string{"Patient/p2"}},
	{"OrAcrossTypes", nil, or(
		match("gender", tk, cmp(storage.FieldCode, storage.OpEq, "male")),
		match("probability", nk, cmp(storage.FieldNum, storage.OpGt, 0.5))), []string{"Patient/p1", "RiskAssessment/r2"}},
	{"NotOr", []string{"Patient"}, storage.Not{Expr: or(
		match("gender", tk, cmp(storage.FieldCode, storage.OpEq, "male")),
		storage.IDs{IDs: []string{"p3"}})}, []string{"Patient/p2"}},
	{"NotNot", []string{"Patient"}, storage.Not{Expr: storage.Not{Expr: match("gender", tk, nil)}}, []string{"Patient/p1", "Patient/p2"}},

	// Chain and Has.
	{"Chain", nil, storage.Chain{Param: "subject", Target: "Patient",
		Where: match("name", sk, cmp(storage.FieldText, storage.OpEq, "peter"))}, []string{"Observation/o1", "Observation/o3"}},
	{"ChainOtherTarget", nil, storage.Chain{Param: "subject", Target: "Group",
		Where: match("name", sk, nil)}, nil},
	{"ChainNested", nil, storage.Chain{Param: "subject", Target: "Patient",
		Where: and(match("gender", tk, cmp(storage.FieldCode, storage.OpEq, "female")), storage.IDs{IDs: []string{"p2"}})}, []string{"Observation/o2"}},
	{"Has", nil, storage.Has{Type: "Observation", Param: "subject",
		Where: match("code", tk, cmp(storage.FieldCode, storage.OpEq, "8867-4"))}, []string{"Patient/p1"}},
	{"HasMany", nil, storage.Has{Type: "Observation", Param: "subject",
		Where: match("code", tk, cmp(storage.FieldCode, storage.OpEq, "1234-5"))}, []string{"Patient/p1", "Patient/p2"}},
	{"HasWrongType", nil, storage.Has{Type: "Encounter", Param: "subject",
		Where: match("code", tk, nil)}, nil},
	{"NotHas", []string{"Patient"}, storage.Not{Expr: storage.Has{Type: "Observation", Param: "subject",
		Where: match("code", tk, nil)}}, []string{"Patient/p3"}},
	{"HasOfChain", nil, storage.Has{Type: "Observation", Param: "subject",
		Where: storage.Chain{Param: "subject", Target: "Patient", Where: match("gender", tk, cmp(storage.FieldCode, storage.OpEq, "female"))}},
		[]string{"Patient/p2"}},

	// Types.
	{"AllTypes", nil, nil, []string{"Observation/o1", "Observation/o2", "Observation/o3", "Patient/p1", "Patient/p2", "Patient/p3",
		"RiskAssessment/r1", "RiskAssessment/r2", "ValueSet/v1", "ValueSet/v2", "ValueSet/v3"}},
	{"TwoTypes", []string{"ValueSet", "RiskAssessment"}, nil, []string{"RiskAssessment/r1", "RiskAssessment/r2", "ValueSet/v1", "ValueSet/v2", "ValueSet/v3"}},
	{"UnknownType", []string{"Nothing"}, nil, nil},
	{"TypeFiltersMatch", []string{"RiskAssessment"}, match("gender", tk, nil), nil},
}

var searchCases = []testCase{
	{"Expressions", func(t *testing.T, e *env) {
		searchFixture(e)
		for _, c := range searchTable {
			t.Run(c.name, func(t *testing.T) {
				q := storage.Query{Types: c.types, Filter: c.filter, Count: 100, Total: true}
				p, err := e.b.Search(e.ctx, q)
				if err != nil {
					e.unsupported(t, err, "%v", c.filter)
					t.Fatalf("Search(%v): %v", c.filter, err)
				}
				wantList(t, refs(p.Records), c.want, fmt.Sprintf("types %v filter %v", c.types, c.filter))
				if p.Total != int64(len(c.want)) {
					t.Errorf("Total = %d, want %d", p.Total, len(c.want))
				}
				if p.Next != "" {
					t.Errorf("Next = %q on the only page", p.Next)
				}
				for _, r := range p.Records {
					if len(r.JSON) == 0 || r.VersionID != 1 || r.Deleted || r.Seq == 0 {
						t.Errorf("search record %s/%s incomplete: %+v", r.Type, r.ID, r)
					}
				}
			})
		}
	}},
	{"SupersededAndDeletedNeverMatch", func(t *testing.T, e *env) {
		codeIs := func(c string) storage.Query {
			return storage.Query{Filter: match("code", tk, cmp(storage.FieldCode, storage.OpEq, c)), Count: 10, Total: true}
		}
		e.put("Observation", "o1", tok("code", loinc, "A", ""), tok("code", loinc, "X", ""))
		e.put("Observation", "o2", tok("code", loinc, "A", ""))
		e.put("Observation", "o1", tok("code", loinc, "B", ""))
		wantList(t, refs(e.search(codeIs("A")).Records), []string{"Observation/o2"}, "old value after update")
		wantList(t, refs(e.search(codeIs("X")).Records), nil, "dropped value after update")
		wantList(t, refs(e.search(codeIs("B")).Records), []string{"Observation/o1"}, "new value after update")
		e.del("Observation", "o1")
		wantList(t, refs(e.search(codeIs("B")).Records), nil, "value of a deleted resource")
		wantList(t, refs(e.search(storage.Query{Count: 10}).Records), []string{"Observation/o2"}, "deleted resource in an unfiltered search")
		wantList(t, refs(e.search(storage.Query{Filter: storage.IDs{IDs: []string{"o1", "o2"}}, Count: 10}).Records),
			[]string{"Observation/o2"}, "deleted resource by id")
		e.put("Observation", "o1", tok("code", loinc, "C", ""))
		wantList(t, refs(e.search(codeIs("C")).Records), []string{"Observation/o1"}, "re-created resource")
		if p := e.search(codeIs("C")); p.Records[0].VersionID != 4 {
			t.Fatalf("search returned version %d, want the current 4", p.Records[0].VersionID)
		}
	}},
	{"ChainAndHasSkipDeleted", func(t *testing.T, e *env) {
		e.put("Patient", "p1", tok("gender", gender, "female", ""))
		e.put("Observation", "o1", ref("subject", "Patient", "p1"), tok("code", loinc, "A", ""))
		chain := storage.Query{Filter: storage.Chain{Param: "subject", Target: "Patient",
			Where: match("gender", tk, cmp(storage.FieldCode, storage.OpEq, "female"))}, Count: 10}
		has := storage.Query{Types: []string{"Patient"}, Filter: storage.Has{Type: "Observation", Param: "subject",
			Where: match("code", tk, nil)}, Count: 10}
		wantList(t, refs(e.search(chain).Records), []string{"Observation/o1"}, "chain before delete")
		wantList(t, refs(e.search(has).Records), []string{"Patient/p1"}, "has before delete")
		e.del("Observation", "o1")
		wantList(t, refs(e.search(has).Records), nil, "has over a deleted referrer")
		e.put("Observation", "o1", ref("subject", "Patient", "p1"))
		e.del("Patient", "p1")
		wantList(t, refs(e.search(chain).Records), nil, "chain to a deleted target")
	}},
	{"TotalOnly", func(t *testing.T, e *env) {
		for _, id := range []string{"a", "b", "c"} {
			e.put("Patient", id, tok("gender", gender, "female", ""))
		}
		e.put("Patient", "d")
		p := e.search(storage.Query{Filter: match("gender", tk, nil), Count: 0, Total: true})
		if len(p.Records) != 0 || p.Next != "" || p.Total != 3 {
			t.Fatalf("Count=0 Total=true: %d records, Next %q, Total %d; want 0, \"\", 3", len(p.Records), p.Next, p.Total)
		}
		p = e.search(storage.Query{Filter: match("gender", tk, nil), Count: 2})
		if p.Total != -1 {
			t.Fatalf("Total = %d without Total asked, want -1", p.Total)
		}
		p = e.search(storage.Query{Filter: match("gender", tk, nil), Count: 2, Total: true})
		if p.Total != 3 || len(p.Records) != 2 || p.Next == "" {
			t.Fatalf("first page: %d records, Total %d, Next %q", len(p.Records), p.Total, p.Next)
		}
		p = e.search(storage.Query{Filter: match("gender", tk, nil), Count: 2, Total: true, Cursor: p.Next})
		if p.Total != 3 || len(p.Records) != 1 {
			t.Fatalf("second page: %d records, Total %d", len(p.Records), p.Total)
		}
	}},
	{"BadExpressions", func(t *testing.T, e *env) {
		searchFixture(e)
		bad := []storage.Expr{
			cmp(storage.FieldCode, storage.OpEq, "male"),                                               // entry-level node at top level
			storage.Part{Index: 0, Cond: cmp(storage.FieldCode, storage.OpEq, "x")},                    // idem
			match("gender", 0, nil),                                                                    // no kind
			match("gender", 99, nil),                                                                   // unknown kind
			match("birthdate", dk, cmp(storage.FieldLow, storage.OpPrefix, int64(1))),                  // Prefix on a number
			match("birthdate", dk, cmp(storage.FieldLow, storage.OpEq, "1970")),                        // wrong value type
			match("name", sk, cmp(storage.FieldText, storage.OpEq, 12)),                                // wrong value type
			match("name", sk, cmp(storage.FieldText, 0, "x")),                                          // no operator
			match("name", sk, cmp(0, storage.OpEq, "x")),                                               // no field
			match("name", sk, storage.IDs{IDs: []string{"p1"}}),                                        // resource-level node inside a Match
			match("name", sk, storage.Part{Index: 0, Cond: cmp(storage.FieldText, storage.OpEq, "x")}), // Part outside a composite
		}
		for _, f := range bad {
			if _, err := e.b.Search(e.ctx, storage.Query{Filter: f, Count: 10}); err == nil {
				t.Errorf("Search(%v) succeeded, want an error", f)
			}
		}
		if _, err := e.b.Search(e.ctx, storage.Query{Count: -1}); err == nil {
			t.Errorf("Search with Count -1 succeeded, want an error")
		}
	}},
}
