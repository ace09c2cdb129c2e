package resources

import (
	"github.com/anodyne-fhir/anodyne/storage"
)

// maxCompositeEntries bounds the cross product of component values of one
// composite node, so that a resource with many codings and many values
// cannot blow up its index.
const maxCompositeEntries = 64

// compositeEntries builds one entry per combination of component values of
// one node: Parts holds one entry per component, in definition order.
func compositeEntries(p *Param, parts [][]storage.Entry) []storage.Entry {
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
		out = append(out, storage.Entry{Param: p.Code, Kind: storage.KindComposite, Parts: c})
	}
	return out
}

// compileComposite compiles "a$b": each "$"-separated part by the type of
// its component, applied to the same composite entry through Part.
func (r *Registry) compileComposite(p *Param, v string) (storage.Expr, error) {
	vals := splitEscaped(v, '$')
	if len(vals) != len(p.Components) {
		return nil, invalid("composite %s needs %d values separated by $, got %q", p.Code, len(p.Components), v)
	}
	conds := make([]storage.Expr, 0, len(vals))
	for i, c := range p.Components {
		cp := c.param
		if cp == nil {
			return nil, invalid("composite %s: component %s unresolved", p.Code, c.Definition)
		}
		cond, err := r.cond(cp, c.Type, "", vals[i])
		if err != nil {
			return nil, err
		}
		conds = append(conds, storage.Part{Index: i, Cond: cond})
	}
	return storage.And{Exprs: conds}, nil
}
