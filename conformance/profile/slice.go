package profile

import (
	"fmt"
	"strings"
	"sync"

	"github.com/anodyne-fhir/anodyne/conformance/fhirpath"
)

// slices assigns each item of a sliced element to the first slice whose
// discriminators it meets, then checks the slicing rules (closed,
// openAtEnd, ordered), each slice's cardinality, and validates every
// item against its slice (or the sliced element when it has none).
//
// A slice that is itself sliced (reslicing: slice "mrn" with reslices
// "mrn/local") distributes the items it got among its reslices the same
// way, by its own slicing or, when it declares none, the sliced element's.
func (w *walker) slices(c *Element, sl *Slicing, items []item, nested bool) {
	assign := make([]int, len(items))
	for i, it := range items {
		assign[i] = -1
		for j, s := range c.Slices {
			if w.matchesSlice(it, s, sl) {
				assign[i] = j
				break
			}
		}
	}
	last := -1
	seenUnmatched := false
	for i, it := range items {
		a := assign[i]
		if a < 0 {
			seenUnmatched = true
			if sl.Rules == "closed" {
				w.add("error", "structure", it.path, "closed slicing of "+c.Path, "the item matches none of the slices "+sliceNames(c))
			}
			continue
		}
		if sl.Rules == "openAtEnd" && seenUnmatched {
			w.add("error", "structure", it.path, "slice "+c.Slices[a].SliceName, "slicing is openAtEnd: items of no slice must come after the slices")
		}
		if sl.Ordered && a < last {
			w.add("error", "structure", it.path, "slice "+c.Slices[a].SliceName, "the slices are ordered and this item comes after a later slice")
		}
		last = max(last, a)
	}
	base := it0path(items)
	resliced := map[int][]item{}
	for j, s := range c.Slices {
		n := 0
		for i, a := range assign {
			if a == j {
				n++
				if len(s.Slices) > 0 {
					resliced[j] = append(resliced[j], items[i])
				}
			}
		}
		w.cardinality(s, n, base, s.SliceName)
		if n == 0 {
			for _, rs := range s.Slices {
				if rs.Min > 0 {
					w.cardinality(rs, 0, base, rs.SliceName)
				}
			}
		}
	}
	for i, it := range items {
		a := assign[i]
		switch {
		case a < 0:
			w.node(it, c, nested)
		case len(c.Slices[a].Slices) == 0:
			w.node(it, c.Slices[a], nested)
		}
	}
	for j, s := range c.Slices {
		if group := resliced[j]; len(group) > 0 {
			rsl := s.Slicing
			if rsl == nil {
				rsl = sl
			}
			w.slices(s, rsl, group, nested)
		}
	}
}

func it0path(items []item) string {
	p := items[0].path
	if i := strings.LastIndexByte(p, '['); i > 0 && strings.HasSuffix(p, "]") {
		return p[:i]
	}
	return p
}

func sliceNames(c *Element) string {
	var names []string
	for _, s := range c.Slices {
		names = append(names, s.SliceName)
	}
	return strings.Join(names, ", ")
}

// matchesSlice reports whether an item meets every discriminator of a slice.
func (w *walker) matchesSlice(it item, s *Element, sl *Slicing) bool {
	if len(sl.Discriminators) == 0 {
		return false
	}
	for _, d := range sl.Discriminators {
		switch d.Type {
		case "value", "pattern":
			targets := discriminatorTargets(s, d.Path)
			if len(targets) == 0 {
				continue // nothing in the slice to compare with
			}
			vals, ok := w.discriminatorValues(it, s, d.Path)
			if !ok {
				return false
			}
			for _, t := range targets {
				found := false
				for _, v := range vals {
					if (t.pattern && matchesPattern(v.Value(), t.v)) || (!t.pattern && equalJSON(v.Value(), t.v)) {
						found = true
						break
					}
				}
				if !found {
					return false
				}
			}
		case "exists":
			el := elementAt(s, d.Path)
			vals, _ := w.discriminatorValues(it, s, d.Path)
			if el != nil && (el.Min > 0) != (len(vals) > 0) {
				return false
			}
			if el != nil && el.Max == 0 && len(vals) > 0 {
				return false
			}
		case "type":
			el := s
			if d.Path != "$this" {
				el = elementAt(s, d.Path)
			}
			vals, _ := w.discriminatorValues(it, s, d.Path)
			if el == nil || len(vals) == 0 {
				return false
			}
			typ := it.typ
			if d.Path != "$this" {
				typ = vals[0].Type()
			}
			if m, ok := vals[0].Value().(map[string]any); ok {
				if rt, _ := m["resourceType"].(string); rt != "" {
					typ = rt
				}
			}
			match := false
			for _, t := range el.Types {
				if t.Code == typ {
					match = true
				}
			}
			if !match {
				return false
			}
		case "profile":
			el := s
			if d.Path != "$this" {
				el = elementAt(s, d.Path)
			}
			vals, _ := w.discriminatorValues(it, s, d.Path)
			if el == nil || len(vals) == 0 {
				return false
			}
			var profiles []string
			for _, t := range el.Types {
				profiles = append(profiles, t.Profiles...)
				profiles = append(profiles, t.TargetProfiles...)
			}
			for _, p := range profiles {
				m, ok := vals[0].Value().(map[string]any)
				if !ok {
					return false
				}
				if conforms, err := w.r.ConformsTo(w.ctx, m, p); err != nil || !conforms {
					return false
				}
			}
		default:
			return false
		}
	}
	return true
}

type target struct {
	v       any
	pattern bool
}

// discriminatorTargets collects the fixed and pattern values a slice
// requires at a discriminator path: on the element at the path, in the
// slices it must contain (BP's component.code.coding:SBPCode.code), or
// within a pattern set higher up (patternCodeableConcept on code for the
// path code.coding.code), and the profile URL of an extension slice for "url".
func discriminatorTargets(s *Element, path string) []target {
	if path == "$this" {
		return ownTargets(s)
	}
	segs := strings.Split(path, ".")
	var out []target
	var walk func(e *Element, segs []string)
	walk = func(e *Element, segs []string) {
		if len(segs) == 0 {
			own := ownTargets(e)
			if len(own) == 0 {
				for _, sl := range e.Slices {
					if sl.Min > 0 {
						walk(sl, nil)
					}
				}
			}
			out = append(out, own...)
			return
		}
		if e.Fixed != nil || e.Pattern != nil {
			for _, t := range ownTargets(e) {
				for _, v := range within(t.v, segs) {
					out = append(out, target{v: v, pattern: t.pattern})
				}
			}
			return
		}
		if segs[0] == "url" && len(segs) == 1 && len(e.Children) == 0 {
			for _, t := range e.Types {
				if t.Code == "Extension" && len(t.Profiles) == 1 {
					out = append(out, target{v: t.Profiles[0]})
					return
				}
			}
		}
		next, _ := e.child(segs[0])
		if next == nil {
			return
		}
		walk(next, segs[1:])
		if len(segs) > 1 || len(ownTargets(next)) == 0 {
			for _, sl := range next.Slices {
				if sl.Min > 0 {
					walk(sl, segs[1:])
				}
			}
		}
	}
	walk(s, segs)
	return out
}

func ownTargets(e *Element) []target {
	switch {
	case e.Fixed != nil:
		return []target{{v: e.Fixed}}
	case e.Pattern != nil:
		return []target{{v: e.Pattern, pattern: true}}
	}
	return nil
}

// within navigates a JSON value by property names, flattening arrays.
func within(v any, segs []string) []any {
	cur := []any{v}
	for _, s := range segs {
		var next []any
		for _, c := range cur {
			m, ok := c.(map[string]any)
			if !ok {
				continue
			}
			switch x := m[s].(type) {
			case nil:
			case []any:
				next = append(next, x...)
			default:
				next = append(next, x)
			}
		}
		cur = next
	}
	return cur
}

func elementAt(s *Element, path string) *Element {
	e := s
	for _, seg := range strings.Split(path, ".") {
		if seg == "$this" {
			continue
		}
		next, _ := e.child(seg)
		if next == nil {
			// A discriminator path names a choice without [x] ("value").
			next = e.childNamed(seg + "[x]")
		}
		if next == nil {
			return nil
		}
		e = next
	}
	return e
}

// discriminatorValues evaluates a discriminator path on an item.
// e is the element (or slice) the item belongs to, which types backbone
// elements for the model (Observation.component has value[x]).
func (w *walker) discriminatorValues(it item, e *Element, path string) (fhirpath.Collection, bool) {
	if path == "$this" {
		return fhirpath.Collection{fhirpath.NewNode(it.val, it.typ)}, true
	}
	expr, err := w.r.pathExpr(path)
	if err != nil {
		return nil, false
	}
	out, err := expr.Evaluate(fhirpath.NewNode(it.val, w.nodeType(it, e)), fhirpath.WithContext(w.ctx), fhirpath.WithEnv("resource", w.res))
	if err != nil {
		return nil, false
	}
	return out, true
}

// pathCache holds parsed discriminator paths; a Registry owns one.
type pathCache struct {
	mu    sync.RWMutex
	exprs map[string]*fhirpath.Expression
}

func (r *Registry) pathExpr(path string) (*fhirpath.Expression, error) {
	r.paths.mu.RLock()
	e, ok := r.paths.exprs[path]
	r.paths.mu.RUnlock()
	if ok {
		return e, nil
	}
	e, err := fhirpath.Parse(path)
	if err != nil {
		return nil, fmt.Errorf("discriminator path %q: %w", path, err)
	}
	r.paths.mu.Lock()
	if r.paths.exprs == nil {
		r.paths.exprs = map[string]*fhirpath.Expression{}
	}
	r.paths.exprs[path] = e
	r.paths.mu.Unlock()
	return e, nil
}
