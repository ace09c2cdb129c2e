package storage

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

// TestExprCodec: every node kind survives the round trip through the job
// record, and corrupt records are errors, not panics.
func TestExprCodec(t *testing.T) {
	cases := []Expr{
		nil,
		IDs{IDs: []string{"a", "b"}},
		Match{Param: "subject", Kind: KindReference, Cond: And{Exprs: []Expr{
			Cmp{Field: FieldRefType, Op: OpEq, Value: "Patient"},
			Or{Exprs: []Expr{Cmp{Field: FieldRefID, Op: OpEq, Value: "p1"}}},
		}}},
		Not{Expr: Match{Param: "date", Kind: KindDate, Cond: Cmp{Field: FieldLow, Op: OpGe, Value: int64(-5)}}},
		Match{Param: "value-quantity", Kind: KindQuantity, Cond: Cmp{Field: FieldNum, Op: OpLt, Value: 1.5}},
		Match{Param: "combo", Kind: KindComposite, Cond: Part{Index: 1, Cond: Cmp{Field: FieldCode, Op: OpEq, Value: "x"}}},
		Chain{Param: "subject", Target: "Patient", Where: Match{Param: "name", Kind: KindString}},
		Has{Type: "Observation", Param: "patient", Where: IDs{IDs: []string{"o"}}},
		And{},
	}
	for _, e := range cases {
		raw, err := MarshalExpr(e)
		if err != nil {
			t.Fatalf("encode %v: %v", e, err)
		}
		back, err := UnmarshalExpr(raw)
		if err != nil {
			t.Fatalf("decode %s: %v", raw, err)
		}
		if (e == nil) != (back == nil) || e != nil && back.String() != e.String() {
			t.Errorf("round trip of %v gave %v", e, back)
		}
	}
	if _, err := MarshalExpr(Cmp{Field: FieldCode, Op: OpEq, Value: 3}); err == nil {
		t.Error("an int value (not int64) must not be stored silently")
	}
	deep := strings.Repeat(`{"op":"not","expr":`, maxExprDepth+2) + `{"op":"ids"}` + strings.Repeat("}", maxExprDepth+2)
	for _, bad := range []string{`{"op":"xor"}`, `{"op":"cmp","field":1}`, `{"op":"not"}`, `[`, deep} {
		if _, err := UnmarshalExpr(json.RawMessage(bad)); err == nil {
			t.Errorf("UnmarshalExpr(%.40s) succeeded", bad)
		}
	}
}

// TestExprCodecCoversEveryNode fails when a node type of the tree, a Kind,
// a Field or an Op is added without a round-trip case above: the list of
// node types comes from the source (the isExpr methods), not from the codec.
func TestExprCodecCoversEveryNode(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "expr.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []string
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if ok && fd.Name.Name == "isExpr" && fd.Recv != nil {
			nodes = append(nodes, fd.Recv.List[0].Type.(*ast.Ident).Name)
		}
	}
	if len(nodes) == 0 {
		t.Fatal("no isExpr methods found in expr.go")
	}
	raw, err := MarshalExpr(everyNode())
	if err != nil {
		t.Fatal(err)
	}
	enc := string(raw)
	for _, n := range nodes {
		if !strings.Contains(enc, `"op":"`+strings.ToLower(n)+`"`) {
			t.Errorf("node %s is not covered by the codec round trip", n)
		}
	}
	back, err := UnmarshalExpr(raw)
	if err != nil || back.String() != everyNode().String() {
		t.Fatalf("round trip of every node: %v, %v", back, err)
	}
	for k := Kind(1); int(k) < len(kindNames); k++ {
		x, _ := UnmarshalExpr(json.RawMessage(`{"op":"match","param":"p","kind":` + itoa(int(k)) + `}`))
		if x.(Match).Kind != k {
			t.Errorf("kind %v does not survive", k)
		}
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func everyNode() Expr {
	return And{Exprs: []Expr{
		Or{Exprs: []Expr{IDs{IDs: []string{"a"}}}},
		Not{Expr: Match{Param: "date", Kind: KindDate, Cond: Cmp{Field: FieldLow, Op: OpGe, Value: int64(1)}}},
		Match{Param: "combo", Kind: KindComposite, Cond: Part{Index: 0, Cond: Cmp{Field: FieldCode, Op: OpEq, Value: "x"}}},
		Chain{Param: "subject", Target: "Patient", Where: Match{Param: "name", Kind: KindString}},
		Has{Type: "Observation", Param: "patient", Where: IDs{IDs: []string{"o"}}},
	}}
}

// TestStoredEnumValues pins the numbers that stored job filters carry:
// renumbering any of these would make a resumed export read another query.
func TestStoredEnumValues(t *testing.T) {
	kinds := map[Kind]uint8{KindString: 1, KindToken: 2, KindReference: 3, KindDate: 4, KindNumber: 5, KindQuantity: 6, KindURI: 7, KindComposite: 8}
	fields := map[Field]uint8{FieldText: 1, FieldExact: 2, FieldSystem: 3, FieldCode: 4, FieldRefType: 5, FieldRefID: 6, FieldRefURL: 7, FieldLow: 8, FieldHigh: 9, FieldNumLow: 10, FieldNumHigh: 11, FieldNum: 12}
	ops := map[Op]uint8{OpEq: 1, OpNe: 2, OpLt: 3, OpLe: 4, OpGt: 5, OpGe: 6, OpPrefix: 7, OpContains: 8}
	for k, v := range kinds {
		if uint8(k) != v {
			t.Errorf("Kind %v = %d, stored as %d", k, uint8(k), v)
		}
	}
	for f, v := range fields {
		if uint8(f) != v {
			t.Errorf("Field %v = %d, stored as %d", f, uint8(f), v)
		}
	}
	for o, v := range ops {
		if uint8(o) != v {
			t.Errorf("Op %v = %d, stored as %d", o, uint8(o), v)
		}
	}
	if len(kinds) != len(kindNames)-1 || len(fields) != len(fieldNames)-1 || len(ops) != len(opNames)-1 {
		t.Error("a Kind, Field or Op was added without pinning its stored value here")
	}
	// A filter as jobs written before this file moved store it.
	const stored = `{"op":"match","expr":{"op":"cmp","field":6,"cmp":1,"str":"p1"},"param":"subject","kind":3}`
	x, err := UnmarshalExpr(json.RawMessage(stored))
	if err != nil {
		t.Fatal(err)
	}
	want := Match{Param: "subject", Kind: KindReference, Cond: Cmp{Field: FieldRefID, Op: OpEq, Value: "p1"}}
	if x.String() != want.String() {
		t.Errorf("stored filter decodes as %v, want %v", x, want)
	}
	if raw, _ := MarshalExpr(want); string(raw) != stored {
		t.Errorf("encoding changed: %s, was %s", raw, stored)
	}
}
