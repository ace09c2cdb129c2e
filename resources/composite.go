package resources

import (
	"fmt"
	"maps"
	"reflect"
	"strings"

	"github.com/anodyne-fhir/anodyne/conformance/fhirpath"

	"github.com/anodyne-fhir/anodyne/storage"
)

// maxCompositeEntries bounds the cross product of component values of one
// composite node, so that a resource with many codings and many values
// cannot blow up its index.
const maxCompositeEntries = 64

// compositeEntries builds one entry per combination of component values of
// one node: Parts holds one entry per component, in definition order. The
// parts carry the Param their own indexer gave them, by which quantities in
// canonical units (see canonicalSuffix) are told apart: the combinations of
// values as written go under p.Code and, when some component has canonical
// values, the combinations using them (for that component; the others as
// written) go under p.Code+canonicalSuffix, where searches in convertible
// units look. Part Params are cleared: a part is named by its position.
func compositeEntries(p *Param, parts [][]storage.Entry) []storage.Entry {
	written := make([][]storage.Entry, len(parts))
	canon := make([][]storage.Entry, len(parts))
	hasCanon := false
	for i, vals := range parts {
		for _, v := range vals {
			isCanon := strings.HasSuffix(v.Param, canonicalSuffix)
			v.Param = ""
			if isCanon {
				canon[i] = append(canon[i], v)
			} else {
				written[i] = append(written[i], v)
			}
		}
		if len(canon[i]) > 0 {
			hasCanon = true
		} else {
			canon[i] = written[i]
		}
	}
	out := combinations(p.Code, written)
	if hasCanon {
		out = append(out, combinations(p.Code+canonicalSuffix, canon)...)
	}
	return out
}

// combinations builds the composite entries of param, one per combination
// of one value of each component.
func combinations(param string, parts [][]storage.Entry) []storage.Entry {
	combos := [][]storage.Entry{nil}
	for _, vals := range parts {
		if len(vals) == 0 {
			return nil // every component must have a value
		}
		var next [][]storage.Entry
		for _, c := range combos {
			for _, v := range vals {
				if len(next) == maxCompositeEntries {
					break
				}
				combo := append(append(make([]storage.Entry, 0, len(c)+1), c...), v)
				next = append(next, combo)
			}
		}
		combos = next
	}
	out := make([]storage.Entry, 0, len(combos))
	for _, c := range combos {
		out = append(out, storage.Entry{Param: param, Kind: storage.KindComposite, Parts: c})
	}
	return out
}

// compileComposite compiles "a$b": each "$"-separated part by the type of
// its component, applied to the same composite entry through Part. It is
// canonical when a quantity part is in a convertible unit; a unitless
// quantity part next to it then compares with that composite's canonical
// values too (only custom composites have two quantity components).
func (r *Registry) compileComposite(p *Param, v string) (_ storage.Expr, canonical bool, _ error) {
	vals := splitEscaped(v, '$')
	if len(vals) != len(p.Components) {
		return nil, false, invalid("composite %s needs %d values separated by $, got %q", p.Code, len(p.Components), v)
	}
	conds := make([]storage.Expr, 0, len(vals))
	for i, c := range p.Components {
		cp := c.param
		if cp == nil {
			return nil, false, invalid("composite %s: component %s unresolved", p.Code, c.Definition)
		}
		cond, canon, err := r.cond(cp, c.Type, "", vals[i])
		if err != nil {
			return nil, false, err
		}
		canonical = canonical || canon
		conds = append(conds, storage.Part{Index: i, Cond: cond})
	}
	return storage.And{Exprs: conds}, canonical, nil
}

// Combinations at the root. A composite whose expression is (or has a
// branch that is) the resource itself, as Observation's code-value-quantity
// ("Observation"; components "code" and "value.as(Quantity)"), combines
// values that each component's own parameter (clinical-code,
// value-quantity) also indexes on the resource. When, for a resource,
// every component's values at the root are exactly that parameter's
// entries (written and canonical), "some combination matches X$Y" is
// "some entry of the first parameter matches X and some entry of the
// second matches Y": the combinations are not written, and a marker
// entry (rootMarker) records that the resource's own entries stand for
// them. Where the values differ (combo-code also indexes the codes of
// Observation.component, so an Observation with components differs), or
// the combinations would be capped, the combinations are written as
// before and no marker is. Compile matches a composite by its entries or
// by the marker and the components' own parameters (compositeJoin).
// Resources indexed before have no marker and keep their combinations, so
// they match as they did.

// rootMarkerCode is the Code of a rootMarker entry: a token entry under
// the composite's own code, which no other entry uses (a composite's
// entries are of KindComposite).
const rootMarkerCode = "root"

func rootMarker(p *Param) storage.Entry {
	return storage.Entry{Param: p.Code, Kind: storage.KindToken, Code: rootMarkerCode}
}

// rootMarked matches the resources whose root combinations of p are left
// to its components' own entries.
func rootMarked(p *Param) storage.Expr {
	return storage.Match{Param: p.Code, Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: rootMarkerCode}}
}

// indexRun is one resource being indexed: what a composite at its root
// compares its component values with.
type indexRun struct {
	r   *Registry
	typ string
	res map[string]any
	own map[string][]storage.Entry // entries of a component's parameter on res, by code
}

// isRoot reports whether fn is the resource itself.
func (run *indexRun) isRoot(fn fhirpath.Node) bool {
	m, ok := fn.Value().(map[string]any)
	return ok && len(m) == len(run.res) && reflect.ValueOf(m).UnsafePointer() == reflect.ValueOf(run.res).UnsafePointer()
}

// ownEntries are the entries of the component's parameter (for this
// resource type) on the resource; ok is false when the type has no such
// parameter.
func (run *indexRun) ownEntries(c Component) (_ []storage.Entry, ok bool, _ error) {
	cp, found := run.r.Param(run.typ, c.param.Code)
	if !found || cp.URL != c.param.URL || cp.compiled == nil {
		return nil, false, nil
	}
	if es, done := run.own[cp.Code]; done {
		return es, true, nil
	}
	col, err := cp.compiled.Evaluate(run.res)
	if err != nil {
		return nil, false, fmt.Errorf("component %s: %w", c.Definition, err)
	}
	var es []storage.Entry
	for _, n := range col {
		if es, err = run.r.appendEntries(es, cp, n, nil); err != nil {
			return nil, false, err
		}
	}
	if run.own == nil {
		run.own = map[string][]storage.Entry{}
	}
	run.own[cp.Code] = es
	return es, true, nil
}

// rootImplied reports whether the component values parts (as indexed by
// the components' parameters, Params kept) at the root are, for each
// component, the same set as the resource's own entries of that
// component's parameter, with no combination capped.
func (run *indexRun) rootImplied(p *Param, parts [][]storage.Entry) (bool, error) {
	combos := 1
	for _, vals := range parts {
		combos *= max(len(vals), 1)
		if combos > maxCompositeEntries {
			return false, nil
		}
	}
	for i, c := range p.Components {
		own, ok, err := run.ownEntries(c)
		if err != nil || !ok {
			return false, err
		}
		if !sameEntries(parts[i], own) {
			return false, nil
		}
	}
	return true, nil
}

// sameEntries compares two lists of plain (part-less) entries as sets.
func sameEntries(a, b []storage.Entry) bool {
	type key struct {
		param, text, exact, system, code, refType, refID, refURL string
		kind                                                     storage.Kind
		low, high                                                int64
		numLow, numHigh, num                                     float64
	}
	set := func(es []storage.Entry) map[key]bool {
		m := make(map[key]bool, len(es))
		for _, e := range es {
			if len(e.Parts) > 0 {
				return nil
			}
			m[key{e.Param, e.Text, e.Exact, e.System, e.Code, e.RefType, e.RefID, e.RefURL, e.Kind, e.Low, e.High, e.NumLow, e.NumHigh, e.Num}] = true
		}
		return m
	}
	sa, sb := set(a), set(b)
	return sa != nil && sb != nil && maps.Equal(sa, sb)
}

// compositeJoin is the condition c of a composite (an And of Part, as
// compileComposite builds it) on the components' own entries, for the
// resources whose root combinations are left to them (rootMarked): each
// part's condition on some entry of its component's parameter. A
// canonical search compares a quantity part with the canonical entries of
// the component where it has any and with its written values otherwise,
// as the canonical combinations do (compositeEntries).
func compositeJoin(p *Param, c storage.Expr, canonical bool) storage.Expr {
	var parts []storage.Expr
	switch x := c.(type) {
	case storage.And:
		parts = x.Exprs
	default:
		parts = []storage.Expr{c}
	}
	// The canonical combinations exist when some quantity component has
	// canonical values; with one quantity component, its part is compared
	// with those values only.
	var anyCanon []storage.Expr
	for _, c := range p.Components {
		if c.param != nil && c.param.Type == storage.KindQuantity {
			anyCanon = append(anyCanon, storage.Match{Param: c.param.Code + canonicalSuffix, Kind: storage.KindQuantity})
		}
	}
	out := make([]storage.Expr, 0, len(parts)+1)
	if canonical && len(anyCanon) > 1 {
		out = append(out, storage.Or{Exprs: anyCanon})
	}
	for _, e := range parts {
		pt, ok := e.(storage.Part)
		if !ok || pt.Index < 0 || pt.Index >= len(p.Components) || p.Components[pt.Index].param == nil {
			return storage.Or{} // never holds: not a composite condition
		}
		cp := p.Components[pt.Index].param
		written := storage.Match{Param: cp.Code, Kind: cp.Type, Cond: pt.Cond}
		if !canonical || cp.Type != storage.KindQuantity {
			out = append(out, written)
			continue
		}
		canon := cp.Code + canonicalSuffix
		if len(anyCanon) == 1 {
			out = append(out, storage.Match{Param: canon, Kind: cp.Type, Cond: pt.Cond})
			continue
		}
		out = append(out, storage.Or{Exprs: []storage.Expr{
			storage.Match{Param: canon, Kind: cp.Type, Cond: pt.Cond},
			storage.And{Exprs: []storage.Expr{storage.Not{Expr: storage.Match{Param: canon, Kind: cp.Type}}, written}},
		}})
	}
	return storage.And{Exprs: out}
}
