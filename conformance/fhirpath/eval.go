package fhirpath

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"
)

// Node is one item of a FHIRPath collection.
//
// Value returns what the node holds: for nodes read from a resource, the
// decoded JSON value itself (map[string]any for complex types, string,
// json.Number, bool for primitives; nil for a primitive that has only an
// extension); for values FHIRPath computed, a Go value: string, bool,
// int64 (Integer), float64 (Decimal), Temporal (Date, DateTime, Time) or
// Quantity.
//
// Type returns the FHIR type name when known: "CodeableConcept",
// "Reference", "Quantity", "dateTime", "code", "Patient", or a backbone
// element path such as "Observation.component". Computed values carry a
// System type name such as "System.String" or "System.Integer" (see the
// Type* constants). It is "" when the model cannot tell.
type Node struct {
	value any
	typ   string
	ext   map[string]any
	// text is the source text of a decimal literal, so that toString()
	// keeps its precision ("1.0", not "1").
	text string
}

// Value returns the node's value (see Node).
func (n Node) Value() any { return n.value }

// Type returns the node's FHIR or System type name (see Node).
func (n Node) Type() string { return n.typ }

// Extension returns the JSON object carried by a primitive's "_name"
// property (its id and extensions), or nil.
func (n Node) Extension() map[string]any { return n.ext }

// NewNode wraps a JSON value with a known FHIR type, for callers that build
// inputs or variables themselves.
func NewNode(value any, fhirType string) Node { return makeNode(value, fhirType, nil) }

func sysNode(v any, typ string) Node { return Node{value: v, typ: typ} }

// Collection is an ordered FHIRPath collection.
type Collection []Node

// Expression is a parsed FHIRPath expression. It is immutable: parse once,
// evaluate many times, from any goroutine.
type Expression struct {
	src  string
	root node
}

// String returns the source text.
func (e *Expression) String() string { return e.src }

// Resolver fetches the resource a reference points to for resolve(). It
// returns the decoded JSON (map[string]any) or nil when it does not know the
// target, in which case resolve() falls back to a stub of the right type.
type Resolver func(ctx context.Context, reference string) (any, error)

// Option adjusts one evaluation.
type Option func(*config)

type config struct {
	ctx      context.Context
	vars     map[string]Collection
	resolver Resolver
	now      time.Time
	logger   *slog.Logger
	conforms ConformsTo
}

// ConformsTo decides conformsTo(url) for a resource: the profile
// validator injects it, the engine knows nothing of profiles.
type ConformsTo func(ctx context.Context, resource any, url string) (bool, error)

// WithConformsTo installs the hook used by conformsTo(); without one,
// conformsTo() is an evaluation error.
func WithConformsTo(f ConformsTo) Option { return func(c *config) { c.conforms = f } }

// WithContext sets the Go context handed to the Resolver and checked for
// cancellation during long evaluations.
func WithContext(ctx context.Context) Option { return func(c *config) { c.ctx = ctx } }

// WithEnv sets the environment variable %name. value is a Collection, a
// Node, or a decoded JSON value. The names resource, context and
// rootResource override the defaults (which are the input).
func WithEnv(name string, value any) Option {
	return func(c *config) {
		if c.vars == nil {
			c.vars = map[string]Collection{}
		}
		c.vars[name] = toCollection(value)
	}
}

// WithResource sets %resource and %rootResource (e.g. the resource that
// contains the element being evaluated).
func WithResource(res any) Option {
	return func(c *config) {
		WithEnv("resource", res)(c)
		WithEnv("rootResource", res)(c)
	}
}

// WithResolver installs the hook used by resolve().
func WithResolver(r Resolver) Option { return func(c *config) { c.resolver = r } }

// WithNow fixes the instant that now(), today() and timeOfDay() report.
func WithNow(t time.Time) Option { return func(c *config) { c.now = t } }

// WithLogger sets where trace() writes (default: slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// ErrEvaluation marks errors raised by evaluation (as opposed to parsing):
// wrong operand types, multiple items where one is required, and so on.
var ErrEvaluation = errors.New("fhirpath: evaluation error")

func evalErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrEvaluation, fmt.Sprintf(format, args...))
}

type evalCtx struct {
	ctx      context.Context
	model    *Model
	input    Collection
	vars     map[string]Collection
	resolver Resolver
	now      time.Time
	logger   *slog.Logger
	conforms ConformsTo
	budget   int
}

// frame holds the iteration variables of the innermost function call.
type frame struct {
	this  Collection
	index int
	total Collection
}

// evalBudget bounds the work of one evaluation (repeat() over cyclic data,
// hostile nesting) so that bad input yields an error instead of hanging.
const evalBudget = 5_000_000

// Evaluate runs the expression against input: a decoded JSON value
// (map[string]any, []any, string, json.Number, bool), a Node or a
// Collection.
func (e *Expression) Evaluate(input any, opts ...Option) (Collection, error) {
	m, err := loadModel()
	if err != nil {
		return nil, err
	}
	cfg := config{}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.ctx == nil {
		cfg.ctx = context.Background()
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	in := toCollection(input)
	// Default variables are answered by lookupVar rather than copied into
	// a map, because extraction evaluates on every write.
	c := &evalCtx{ctx: cfg.ctx, model: m, input: in, vars: cfg.vars, resolver: cfg.resolver, now: cfg.now, logger: cfg.logger, conforms: cfg.conforms, budget: evalBudget}
	out, err := e.root.eval(c, in, &frame{this: in})
	if err != nil {
		return nil, fmt.Errorf("fhirpath: evaluate %q: %w", e.src, err)
	}
	return out, nil
}

func toCollection(v any) Collection {
	switch x := v.(type) {
	case nil:
		return nil
	case Collection:
		return x
	case Node:
		return Collection{x}
	case []Node:
		return Collection(x)
	case []any:
		out := make(Collection, 0, len(x))
		for _, e := range x {
			out = append(out, makeNode(e, "", nil))
		}
		return out
	case int:
		return Collection{sysNode(int64(x), TypeInteger)}
	case int64:
		return Collection{sysNode(x, TypeInteger)}
	case float64:
		return Collection{sysNode(x, TypeDecimal)}
	case Temporal:
		return Collection{sysNode(x, map[TemporalKind]string{KindDate: TypeDate, KindDateTime: TypeDateTime, KindTime: TypeTime}[x.Kind])}
	case Quantity:
		return Collection{sysNode(x, TypeQuantity)}
	case string:
		return Collection{sysNode(x, TypeString)}
	case bool:
		return Collection{sysNode(x, TypeBoolean)}
	}
	return Collection{makeNode(v, "", nil)}
}

// makeNode builds a node for a JSON value; a resource carries its own type.
func makeNode(v any, typ string, ext any) Node {
	n := Node{value: v, typ: typ}
	if e, ok := ext.(map[string]any); ok {
		n.ext = e
	}
	if m, ok := v.(map[string]any); ok {
		if rt, ok := m["resourceType"].(string); ok && (typ == "" || typ == "Resource" || typ == "DomainResource") {
			n.typ = rt
		}
	}
	return n
}

// tick charges the evaluation budget and notices cancellation.
func (c *evalCtx) tick(n int) error {
	c.budget -= n
	if c.budget < 0 {
		return evalErr("evaluation exceeded its work budget")
	}
	if c.budget%4096 < n {
		if err := c.ctx.Err(); err != nil {
			return fmt.Errorf("fhirpath: evaluation cancelled: %w", err)
		}
	}
	return nil
}

type node interface {
	eval(c *evalCtx, focus Collection, fr *frame) (Collection, error)
}

type literalNode struct{ val Collection }

func (n *literalNode) eval(*evalCtx, Collection, *frame) (Collection, error) { return n.val, nil }

type varNode struct{ name string }

// lookupVar answers %name: caller-set variables first, then the defaults.
func (c *evalCtx) lookupVar(name string) (Collection, bool) {
	if v, ok := c.vars[name]; ok {
		return v, true
	}
	switch name {
	case "context", "resource", "rootResource":
		return c.input, true
	case "ucum":
		return Collection{sysNode("http://unitsofmeasure.org", TypeString)}, true
	case "sct":
		return Collection{sysNode("http://snomed.info/sct", TypeString)}, true
	case "loinc":
		return Collection{sysNode("http://loinc.org", TypeString)}, true
	}
	return nil, false
}

func (n *varNode) eval(c *evalCtx, _ Collection, _ *frame) (Collection, error) {
	v, ok := c.lookupVar(n.name)
	if !ok {
		// FHIR defines these two families of constants by name.
		if name, found := strings.CutPrefix(n.name, "vs-"); found {
			return Collection{sysNode("http://hl7.org/fhir/ValueSet/"+name, TypeString)}, nil
		}
		if name, found := strings.CutPrefix(n.name, "ext-"); found {
			return Collection{sysNode("http://hl7.org/fhir/StructureDefinition/"+name, TypeString)}, nil
		}
		return nil, evalErr("undefined environment variable %%%s", n.name)
	}
	return v, nil
}

type specialNode struct{ name string }

func (n *specialNode) eval(_ *evalCtx, _ Collection, fr *frame) (Collection, error) {
	switch n.name {
	case "$this":
		return fr.this, nil
	case "$index":
		return Collection{sysNode(int64(fr.index), TypeInteger)}, nil
	default:
		return fr.total, nil
	}
}

// memberNode is a path step: target.name, or name alone against the focus.
type memberNode struct {
	target node
	name   string
}

func (n *memberNode) eval(c *evalCtx, focus Collection, fr *frame) (Collection, error) {
	in := focus
	if n.target != nil {
		var err error
		if in, err = n.target.eval(c, focus, fr); err != nil {
			return nil, err
		}
	} else if n.name != "" && n.name[0] >= 'A' && n.name[0] <= 'Z' {
		// A leading type name (Patient.name, Resource.id) selects the
		// focus items of that type rather than a child element.
		var out Collection
		matched := false
		for _, it := range in {
			if it.typ != "" && c.model.IsA(it.typ, n.name) {
				out = append(out, it)
				matched = true
			}
		}
		if matched || c.model.HasType(n.name) {
			return out, nil
		}
	}
	if err := c.tick(len(in) + 1); err != nil {
		return nil, err
	}
	var out Collection
	for _, it := range in {
		out = c.children(out, it, n.name)
	}
	return out, nil
}

// children appends the child elements called name of it.
func (c *evalCtx) children(out Collection, it Node, name string) Collection {
	m, isMap := it.value.(map[string]any)
	if !isMap {
		// Primitives expose only their id and extensions.
		if it.ext != nil && (name == "extension" || name == "id") {
			return appendJSON(out, it.ext[name], nil, map[string]string{"extension": "Extension", "id": "string"}[name])
		}
		return out
	}
	if types, _, choice, ok := c.model.Element(it.typ, name); ok {
		if choice {
			for _, t := range types {
				key := name + upperFirst(t)
				if v, ok := m[key]; ok || m["_"+key] != nil {
					return appendJSON(out, v, m["_"+key], t)
				}
			}
			return out
		}
		return appendJSON(out, m[name], m["_"+name], types[0])
	}
	if it.typ == "System.TypeInfo" {
		if s, ok := m[name].(string); ok {
			return append(out, sysNode(s, TypeString))
		}
		return out
	}
	v, ok := m[name]
	if !ok && m["_"+name] == nil {
		if it.typ == "" {
			// Without a model type, still find choice elements by prefix
			// so untyped input (e.g. a bare Extension) navigates.
			for k, cv := range m {
				if len(k) > len(name) && strings.HasPrefix(k, name) && k[len(name)] >= 'A' && k[len(name)] <= 'Z' {
					return appendJSON(out, cv, m["_"+k], lowerFirstType(k[len(name):]))
				}
			}
		}
		return out
	}
	return appendJSON(out, v, m["_"+name], "")
}

func lowerFirstType(s string) string {
	switch s {
	case "Boolean", "Integer", "Decimal", "String", "Code", "Uri", "Url", "Canonical", "Date", "DateTime", "Time", "Instant", "Id", "Markdown", "Oid", "Uuid", "PositiveInt", "UnsignedInt", "Base64Binary":
		return strings.ToLower(s[:1]) + s[1:]
	}
	return s
}

func appendJSON(out Collection, v, ext any, typ string) Collection {
	if arr, ok := v.([]any); ok {
		extArr, _ := ext.([]any)
		for i, e := range arr {
			var x any
			if i < len(extArr) {
				x = extArr[i]
			}
			out = append(out, makeNode(e, typ, x))
		}
		// Extensions beyond the values (values all null) are still elements.
		for i := len(arr); i < len(extArr); i++ {
			if extArr[i] != nil {
				out = append(out, makeNode(nil, typ, extArr[i]))
			}
		}
		return out
	}
	if extArr, ok := ext.([]any); ok && v == nil {
		for _, x := range extArr {
			if x != nil {
				out = append(out, makeNode(nil, typ, x))
			}
		}
		return out
	}
	if v == nil && ext == nil {
		return out
	}
	return append(out, makeNode(v, typ, ext))
}

type indexNode struct{ target, index node }

func (n *indexNode) eval(c *evalCtx, focus Collection, fr *frame) (Collection, error) {
	in, err := n.target.eval(c, focus, fr)
	if err != nil {
		return nil, err
	}
	idx, err := n.index.eval(c, fr.this, fr)
	if err != nil {
		return nil, err
	}
	if len(idx) == 0 {
		return nil, nil
	}
	i, ok := asInteger(idx)
	if !ok {
		return nil, evalErr("indexer must be a single integer")
	}
	if i < 0 || i >= int64(len(in)) {
		return nil, nil
	}
	return Collection{in[i]}, nil
}

type negateNode struct{ operand node }

func (n *negateNode) eval(c *evalCtx, focus Collection, fr *frame) (Collection, error) {
	v, err := n.operand.eval(c, focus, fr)
	if err != nil || len(v) == 0 {
		return nil, err
	}
	if len(v) > 1 {
		return nil, evalErr("unary minus on a collection of %d items", len(v))
	}
	switch x := sysVal(c, v[0]).(type) {
	case int64:
		return Collection{sysNode(-x, TypeInteger)}, nil
	case float64:
		return Collection{sysNode(-x, TypeDecimal)}, nil
	case Quantity:
		return Collection{sysNode(Quantity{Value: -x.Value, Unit: x.Unit}, TypeQuantity)}, nil
	}
	return nil, evalErr("unary minus needs a number or quantity")
}

// callNode is a function invocation, on a target or on the focus.
type callNode struct {
	target node
	name   string
	fn     fnImpl
	args   []node
	typ    typeSpec // for is/as/ofType
}

func (n *callNode) eval(c *evalCtx, focus Collection, fr *frame) (Collection, error) {
	in := focus
	if n.target != nil {
		var err error
		if in, err = n.target.eval(c, focus, fr); err != nil {
			return nil, err
		}
	}
	if err := c.tick(len(in) + 1); err != nil {
		return nil, err
	}
	out, err := n.fn(c, in, n, fr)
	if err != nil {
		return nil, fmt.Errorf("%s(): %w", n.name, err)
	}
	return out, nil
}

// arg evaluates a non-iterating argument in the caller's context.
func (n *callNode) arg(c *evalCtx, i int, fr *frame) (Collection, error) {
	return n.args[i].eval(c, fr.this, fr)
}

// typeSpec is a parsed type name: namespace "FHIR", "System" or "" (unqualified).
type typeSpec struct {
	ns, name string
}

func parseTypeName(s string) typeSpec {
	if ns, name, ok := strings.Cut(s, "."); ok && (ns == "FHIR" || ns == "System") {
		return typeSpec{ns: ns, name: name}
	}
	return typeSpec{name: s}
}

// checkType rejects type names that are neither FHIR nor System types.
func (c *evalCtx) checkType(ts typeSpec) error {
	if ts.ns != "" || systemTypes[ts.name] || ts.name == "Any" {
		return nil // a qualified name that does not exist simply never matches
	}
	if ts.ns != "System" && (c.model.HasType(ts.name) || ts.name == "Base") {
		return nil
	}
	return evalErr("unknown type %s", ts.name)
}

// castable implements as/ofType. FHIR primitives cast only to their exact
// type: a code is a string for is(), but as(string) must not re-type it
// (the official suite requires Patient.gender.as(string) to be empty).
func (c *evalCtx) castable(n Node, ts typeSpec) bool {
	if c.model.IsPrimitive(n.typ) && ts.ns != "System" {
		return n.typ == ts.name
	}
	return c.isOfType(n, ts)
}

var systemTypes = map[string]bool{"String": true, "Boolean": true, "Integer": true, "Decimal": true, "Date": true, "DateTime": true, "Time": true, "Quantity": true}

// isOfType implements `is`: a FHIR node matches its own type and its bases;
// a System value matches its System type. Unqualified names try FHIR first.
func (c *evalCtx) isOfType(n Node, ts typeSpec) bool {
	typ := n.typ
	if typ == "" {
		typ = inferType(n.value)
	}
	if strings.HasPrefix(typ, "System.") {
		if ts.ns == "FHIR" {
			return false
		}
		if ts.name == "Any" {
			return true
		}
		return typ == "System."+ts.name
	}
	if ts.ns == "System" {
		return false
	}
	if ts.ns == "" && systemTypes[ts.name] && !c.model.HasType(ts.name) {
		return false
	}
	return c.model.IsA(typ, ts.name) || (ts.name == "Resource" && c.model.IsResource(typ)) || ts.name == "Base" || ts.name == "Element" && !c.model.IsResource(typ) && typ != ""
}

func inferType(v any) string {
	switch v.(type) {
	case string:
		return TypeString
	case bool:
		return TypeBoolean
	case int64:
		return TypeInteger
	case float64:
		return TypeDecimal
	case json.Number:
		x, ok := parseNumber(v.(json.Number))
		if !ok {
			return ""
		}
		if _, isInt := x.(int64); isInt {
			return TypeInteger
		}
		return TypeDecimal
	case Temporal:
		return map[TemporalKind]string{KindDate: TypeDate, KindDateTime: TypeDateTime, KindTime: TypeTime}[v.(Temporal).Kind]
	case Quantity:
		return TypeQuantity
	}
	return ""
}

type typeOpNode struct {
	op   string
	left node
	typ  typeSpec
}

func (n *typeOpNode) eval(c *evalCtx, focus Collection, fr *frame) (Collection, error) {
	in, err := n.left.eval(c, focus, fr)
	if err != nil || len(in) == 0 {
		return nil, err
	}
	if err := c.checkType(n.typ); err != nil {
		return nil, err
	}
	if len(in) > 1 {
		if n.op == "as" {
			// The R4 search parameters apply 'as' to collections
			// (Observation.component.value as Quantity); every engine
			// used with them filters, so 'as' on many items is ofType.
			var out Collection
			for _, it := range in {
				if c.castable(it, n.typ) {
					out = append(out, it)
				}
			}
			return out, nil
		}
		return nil, evalErr("'%s' needs a single item, got %d", n.op, len(in))
	}
	if n.op == "is" {
		return boolColl(c.isOfType(in[0], n.typ)), nil
	}
	if c.castable(in[0], n.typ) {
		return in, nil
	}
	return nil, nil
}

func boolColl(b bool) Collection { return Collection{sysNode(b, TypeBoolean)} }

// sysVal converts a node to the Go value FHIRPath computes with: string,
// bool, int64, float64, Temporal, Quantity, or the JSON map for other
// complex types; nil when the node has no value.
func sysVal(c *evalCtx, n Node) any {
	switch v := n.value.(type) {
	case nil:
		return nil
	case string:
		switch n.typ {
		case "date":
			if t, err := ParseTemporal(v, KindDate); err == nil {
				return t
			}
			if t, err := ParseTemporal(v, KindDateTime); err == nil {
				return t
			}
		case "dateTime", "instant":
			if t, err := ParseTemporal(v, KindDateTime); err == nil {
				return t
			}
		case "time":
			if t, err := ParseTemporal(v, KindTime); err == nil {
				return t
			}
		case "integer", "positiveInt", "unsignedInt", "decimal":
			if x, ok := parseNumber(json.Number(v)); ok {
				return x
			}
		}
		return v
	case json.Number:
		x, ok := parseNumber(v)
		if !ok {
			return nil
		}
		if f, isInt := x.(int64); isInt && n.typ == "decimal" {
			return float64(f)
		}
		return x
	case map[string]any:
		if n.typ != "" && c.model.IsA(n.typ, "Quantity") || n.typ == "" && v["value"] != nil && (v["unit"] != nil || v["code"] != nil) && len(v) <= 6 {
			return mapQuantity(v)
		}
		return v
	}
	return n.value
}

func mapQuantity(m map[string]any) any {
	var val float64
	switch x := m["value"].(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return m
		}
		val = f
	case float64:
		val = x
	default:
		return m
	}
	unit, _ := m["code"].(string)
	if unit == "" {
		unit, _ = m["unit"].(string)
	}
	return Quantity{Value: val, Unit: unit}
}

func asInteger(col Collection) (int64, bool) {
	if len(col) != 1 {
		return 0, false
	}
	switch v := col[0].value.(type) {
	case int64:
		return v, true
	case json.Number:
		i, err := v.Int64()
		return i, err == nil
	}
	return 0, false
}

// singletonBool applies the FHIRPath singleton evaluation rule for a
// Boolean operand: empty is unknown, one boolean is itself, one other
// item is true, more than one item is an error.
func singletonBool(c *evalCtx, col Collection) (val, known bool, err error) {
	switch len(col) {
	case 0:
		return false, false, nil
	case 1:
		if b, ok := sysVal(c, col[0]).(bool); ok {
			return b, true, nil
		}
		return true, true, nil
	}
	return false, false, evalErr("expected a single boolean, got %d items", len(col))
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
