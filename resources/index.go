package resources

import (
	"errors"
	"fmt"
	"regexp"
	"slices"

	"github.com/anodyne-fhir/anodyne/conformance/fhirpath"
	"github.com/anodyne-fhir/anodyne/storage"
)

// evaluator is a parsed FHIRPath expression; Load parses each one once.
type evaluator = *fhirpath.Expression

// R4 search expressions use "as" on collections ("(Observation.component.value
// as Quantity)", "value.as(Range)"), which FHIRPath defines only for a single
// item and which the engine rightly rejects. Every server treats them as
// type filters, which is what ofType() is (R5 rewrote its definitions the
// same way), so they are rewritten before parsing.
var (
	asOperator = regexp.MustCompile(`\(([A-Za-z][\w.]*) as ([A-Za-z]\w*)\)`)
	asFunction = regexp.MustCompile(`\.as\(([A-Za-z]\w*)\)`)
)

func lenientAs(src string) string {
	src = asOperator.ReplaceAllString(src, "($1.ofType($2))")
	return asFunction.ReplaceAllString(src, ".ofType($1)")
}

func compileExpr(src string) (evaluator, error) {
	e, err := fhirpath.Parse(lenientAs(src))
	if err != nil {
		return nil, fmt.Errorf("parse FHIRPath %q: %w", src, err)
	}
	return e, nil
}

// node is one FHIRPath result as the converters see it: the JSON value and
// its FHIR type name.
type node struct {
	v   any
	typ string
}

// Index extracts the search index entries of a resource: every parameter of
// its type is evaluated and each resulting value converted by the
// parameter's type (see the index* function of each type's file). The
// resource is JSON decoded with UseNumber (numbers as json.Number keep
// their written precision). Values of the wrong shape for a parameter are
// skipped, not errors: validation reports them, indexing only finds what it
// can search.
func (r *Registry) Index(resourceType string, res map[string]any) ([]storage.Entry, error) {
	if res == nil {
		return nil, invalid("nil resource")
	}
	if rt, _ := res["resourceType"].(string); rt != resourceType {
		return nil, invalid("resource has resourceType %q, want %q", rt, resourceType)
	}
	return r.index(resourceType, res, nil)
}

// IndexParams is Index restricted to the parameters named in codes: what a
// check of one resource against an expression needs (storage.Params), at
// a fraction of the cost of every parameter of the type.
func (r *Registry) IndexParams(resourceType string, res map[string]any, codes []string) ([]storage.Entry, error) {
	if res == nil {
		return nil, invalid("nil resource")
	}
	if rt, _ := res["resourceType"].(string); rt != resourceType {
		return nil, invalid("resource has resourceType %q, want %q", rt, resourceType)
	}
	if codes == nil {
		codes = []string{}
	}
	return r.index(resourceType, res, codes)
}

// index evaluates the parameters of resourceType named in only, or all of
// them when only is nil.
func (r *Registry) index(resourceType string, res map[string]any, only []string) ([]storage.Entry, error) {
	params := r.params(resourceType)
	run := &indexRun{r: r, typ: resourceType, res: res}
	var out []storage.Entry
	var errs []error
	for _, p := range params {
		if p.compiled == nil || only != nil && !slices.Contains(only, p.Code) && !slices.Contains(only, p.Code+canonicalSuffix) {
			continue
		}
		col, err := p.compiled.Evaluate(res)
		if err != nil {
			errs = append(errs, fmt.Errorf("index %s.%s: %w", resourceType, p.Code, err))
			continue
		}
		for _, n := range col {
			if out, err = r.appendEntries(out, p, n, run); err != nil {
				errs = append(errs, fmt.Errorf("index %s.%s: %w", resourceType, p.Code, err))
			}
		}
	}
	if len(errs) > 0 {
		return out, errors.Join(errs...)
	}
	return out, nil
}

func (r *Registry) appendEntries(out []storage.Entry, p *Param, fn fhirpath.Node, run *indexRun) ([]storage.Entry, error) {
	n := node{v: fn.Value(), typ: fn.Type()}
	if n.v == nil {
		return out, nil
	}
	switch p.Type {
	case storage.KindString:
		return append(out, indexString(p, n)...), nil
	case storage.KindToken:
		return append(out, indexToken(p, n)...), nil
	case storage.KindReference:
		return append(out, r.indexReference(p, n)...), nil
	case storage.KindDate:
		if t, ok := n.v.(fhirpath.Temporal); ok {
			n.v = t.String()
		}
		return append(out, indexDate(p, n)...), nil
	case storage.KindNumber:
		return append(out, indexNumber(p, n)...), nil
	case storage.KindQuantity:
		return append(out, indexQuantity(p, n)...), nil
	case storage.KindURI:
		return append(out, indexURI(p, n)...), nil
	case storage.KindComposite:
		parts, err := r.indexComposite(p, fn, run)
		return append(out, parts...), err
	}
	return out, nil
}

// indexComposite evaluates each component relative to the composite's node.
// At the resource's root, the combinations are left out when the
// component values equal the resource's own entries of the components'
// parameters (rootImplied): a marker entry says so instead.
func (r *Registry) indexComposite(p *Param, fn fhirpath.Node, run *indexRun) ([]storage.Entry, error) {
	parts := make([][]storage.Entry, len(p.Components))
	for i, c := range p.Components {
		if c.compiled == nil || c.param == nil {
			return nil, nil
		}
		col, err := c.compiled.Evaluate(fn)
		if err != nil {
			return nil, fmt.Errorf("component %s: %w", c.Definition, err)
		}
		for _, cn := range col {
			if parts[i], err = r.appendEntries(parts[i], c.param, cn, nil); err != nil {
				return nil, err
			}
		}
	}
	if p.atRoot && run != nil && run.isRoot(fn) {
		implied, err := run.rootImplied(p, parts)
		if err != nil {
			return nil, err
		}
		if implied {
			for _, vals := range parts {
				if len(vals) == 0 {
					return nil, nil // no combination, as compositeEntries
				}
			}
			return []storage.Entry{rootMarker(p)}, nil
		}
	}
	return compositeEntries(p, parts), nil
}
