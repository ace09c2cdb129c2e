package resources

import (
	"strings"

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
