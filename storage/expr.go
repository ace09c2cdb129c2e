package storage

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Kind is the type of a search index entry. It decides which fields of an
// Entry are meaningful and, in each backend, where the entry is stored.
type Kind uint8

// The kinds mirror the R4 search parameter types that have stored values.
// Special parameters (_text, _content, _filter) have no kind.
const (
	// The values are stored (bulk job filters, index tables): never renumber.
	KindString    Kind = 1
	KindToken     Kind = 2
	KindReference Kind = 3
	KindDate      Kind = 4
	KindNumber    Kind = 5
	KindQuantity  Kind = 6
	KindURI       Kind = 7
	KindComposite Kind = 8
)

var kindNames = [...]string{"", "string", "token", "reference", "date", "number", "quantity", "uri", "composite"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Date bounds for open-ended periods, in Unix milliseconds.
const (
	MinDate int64 = math.MinInt64 / 2
	MaxDate int64 = math.MaxInt64 / 2
)

// Entry is one search index value extracted from a resource. The same field
// vocabulary is used at write time (entries) and at query time (Cmp.Field),
// so that what is indexed and what is asked can never drift apart.
//
// Which fields are set, by Kind:
//   - String: Text (normalized: lower case, accents and punctuation folded), Exact (as written).
//   - Token: System, Code, Text (normalized display/text, for :text).
//   - Reference: RefType and RefID for a reference to a resource on this
//     server ("Patient/123"), RefURL for an absolute or canonical reference
//     (with |version stripped), and System/Code for the identifier of a
//     logical reference (for :identifier).
//   - Date: Low and High in Unix milliseconds UTC, both inclusive.
//   - Number: NumLow, NumHigh (the precision-derived range, inclusive), Num.
//   - Quantity: NumLow, NumHigh, Num, System and Code (the unit code). The
//     indexer adds the value in canonical UCUM units as a separate entry
//     under the parameter name "<code>:canonical", so that a query without
//     a unit never compares against converted values.
//   - URI: Exact.
//   - Composite: Parts, one entry per component, in definition order.
type Entry struct {
	Param  string `json:"p"`
	Kind   Kind   `json:"k"`
	Text   string `json:"t,omitempty"`
	Exact  string `json:"x,omitempty"`
	System string `json:"s,omitempty"`
	Code   string `json:"c,omitempty"`

	RefType string `json:"rt,omitempty"`
	RefID   string `json:"ri,omitempty"`
	RefURL  string `json:"ru,omitempty"`

	Low  int64 `json:"lo,omitempty"`
	High int64 `json:"hi,omitempty"`

	NumLow  float64 `json:"nl,omitempty"`
	NumHigh float64 `json:"nh,omitempty"`
	Num     float64 `json:"n,omitempty"`

	Parts []Entry `json:"parts,omitempty"`
}

// Field names an Entry field in a query.
type Field uint8

// Fields of Entry, usable in Cmp.
const (
	// The values are stored (bulk job filters): never renumber.
	FieldText    Field = 1
	FieldExact   Field = 2
	FieldSystem  Field = 3
	FieldCode    Field = 4
	FieldRefType Field = 5
	FieldRefID   Field = 6
	FieldRefURL  Field = 7
	FieldLow     Field = 8
	FieldHigh    Field = 9
	FieldNumLow  Field = 10
	FieldNumHigh Field = 11
	FieldNum     Field = 12
)

var fieldNames = [...]string{"", "Text", "Exact", "System", "Code", "RefType", "RefID", "RefURL", "Low", "High", "NumLow", "NumHigh", "Num"}

func (f Field) String() string {
	if int(f) < len(fieldNames) {
		return fieldNames[f]
	}
	return "field(" + strconv.Itoa(int(f)) + ")"
}

// Op is a comparison operator.
type Op uint8

// Operators. Prefix and Contains apply to string fields only.
const (
	// The values are stored (bulk job filters): never renumber.
	OpEq       Op = 1
	OpNe       Op = 2
	OpLt       Op = 3
	OpLe       Op = 4
	OpGt       Op = 5
	OpGe       Op = 6
	OpPrefix   Op = 7
	OpContains Op = 8
)

var opNames = [...]string{"", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Prefix", "Contains"}

func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Expr is a node of the search expression tree. The set of node types is
// closed (sealed by an unexported method): each backend must handle every
// one of them or return ErrUnsupported.
//
// Top-level nodes (And, Or, Not, Has, Missing, Chain, IDs) select resources;
// entry-level nodes (Cmp and And/Or/Not of them, inside Has/Match) select a
// single index entry, so that several conditions hold on the same value
// (for example Low <= x AND High >= y on one date, or the two parts of a
// composite).
type Expr interface {
	isExpr()
	String() string
}

// And holds when every sub-expression holds. An empty And holds.
type And struct{ Exprs []Expr }

// Or holds when at least one sub-expression holds. An empty Or never holds.
type Or struct{ Exprs []Expr }

// Not negates a resource-level expression (":not", ":missing=false" on sets).
type Not struct{ Expr Expr }

// Match holds for a resource that has at least one index entry of parameter
// Param (of kind Kind) satisfying Cond. Cond is built from Cmp, And, Or and
// Part; nil Cond means "has any entry" (":missing=false").
type Match struct {
	Param string
	Kind  Kind
	Cond  Expr
}

// Part applies Cond to the composite part at Index of the entry being matched.
type Part struct {
	Index int
	Cond  Expr
}

// Cmp compares one field of an index entry with a value. Value is a string
// for string fields, an int64 for Low/High, a float64 for NumLow/NumHigh/Num.
type Cmp struct {
	Field Field
	Op    Op
	Value any
}

// IDs holds for resources whose logical id is one of the listed ones.
type IDs struct{ IDs []string }

// Chain holds for a resource whose reference parameter Param points to a
// resource of type Target that matches Where ("subject:Patient.name=peter").
type Chain struct {
	Param  string
	Target string
	Where  Expr
}

// Has is a reverse chain ("_has:Observation:patient:code=1234-5"): it holds
// for a resource R when some resource of type Type, whose reference parameter
// Param points to R, matches Where.
type Has struct {
	Type  string
	Param string
	Where Expr
}

// Query is a search request to a backend.
type Query struct {
	// Types restricts the resource types; empty means every type.
	Types []string
	// Filter selects resources; nil selects every current resource of Types.
	Filter Expr
	// Sort orders the results; the backend breaks ties by type and id so
	// that paging is deterministic. An empty Sort orders by type and id, the
	// cheapest stable order.
	Sort []Sort
	// Count is the page size; 0 asks only for the total.
	Count int
	// Cursor continues a previous query (from Page.Next).
	Cursor string
	// Total asks for the number of matches in Page.Total.
	Total bool
}

// Sort orders by the values of one parameter: ascending by the lowest
// value, descending by the highest (search.html#sort).
type Sort struct {
	Param string
	Kind  Kind
	Desc  bool
}

func (And) isExpr()   {}
func (Or) isExpr()    {}
func (Not) isExpr()   {}
func (Match) isExpr() {}
func (Part) isExpr()  {}
func (Cmp) isExpr()   {}
func (IDs) isExpr()   {}
func (Chain) isExpr() {}
func (Has) isExpr()   {}

// The String methods give a canonical form for golden tests, in the style
// "(And (Match code token (Cmp Code Eq \"1234\")) ...)".

func (e And) String() string { return list("And", e.Exprs) }
func (e Or) String() string  { return list("Or", e.Exprs) }
func (e Not) String() string { return "(Not " + str(e.Expr) + ")" }
func (e Match) String() string {
	return fmt.Sprintf("(Match %s %s %s)", e.Param, e.Kind, str(e.Cond))
}
func (e Part) String() string { return fmt.Sprintf("(Part %d %s)", e.Index, str(e.Cond)) }
func (e Cmp) String() string {
	return fmt.Sprintf("(Cmp %s %s %s)", e.Field, e.Op, value(e.Value))
}
func (e IDs) String() string {
	q := make([]string, len(e.IDs))
	for i, id := range e.IDs {
		q[i] = strconv.Quote(id)
	}
	return "(IDs " + strings.Join(q, " ") + ")"
}
func (e Chain) String() string {
	return fmt.Sprintf("(Chain %s %s %s)", e.Param, e.Target, str(e.Where))
}
func (e Has) String() string {
	return fmt.Sprintf("(Has %s %s %s)", e.Type, e.Param, str(e.Where))
}

func list(op string, es []Expr) string {
	var b strings.Builder
	b.WriteString("(" + op)
	for _, e := range es {
		b.WriteString(" " + str(e))
	}
	b.WriteString(")")
	return b.String()
}

func str(e Expr) string {
	if e == nil {
		return "nil"
	}
	return e.String()
}

func value(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	default:
		return fmt.Sprintf("%v", x)
	}
}
