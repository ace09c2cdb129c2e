package resources

import (
	"fmt"
	"slices"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Compile turns one search parameter of a query into an expression.
//
// values holds the raw (URL-decoded, still escaped) value of each
// occurrence of the parameter in the query: occurrences are AND-ed
// ("date=ge2020&date=lt2021"), and within one value the comma-separated
// alternatives are OR-ed. Compile does the splitting and the "\," "\$" "\|"
// "\\" unescaping itself. modifier is without the colon ("exact",
// "Patient"); chains and _has are built by the caller from Param and
// Compile on the target type.
//
// Errors wrap ErrUnknownParam, ErrInvalidValue or ErrUnsupported; token
// :in and :not-in return a *ValueSetError for the caller to resolve.
func (r *Registry) Compile(resourceType, code, modifier string, values []string) (storage.Expr, error) {
	p, ok := r.Param(resourceType, code)
	if !ok {
		return nil, fmt.Errorf("%s.%s: %w", resourceType, code, ErrUnknownParam)
	}
	if len(values) == 0 {
		return nil, invalid("%s: no value", code)
	}
	e, err := r.compile(resourceType, p, modifier, values)
	if err != nil {
		return nil, fmt.Errorf("%s.%s: %w", resourceType, code, err)
	}
	return e, nil
}

func (r *Registry) compile(resourceType string, p *Param, modifier string, values []string) (storage.Expr, error) {
	if modifier != "" && !contains(p.Modifiers, modifier) && !(p.Type == storage.KindReference && len(p.Targets) == 0 && isTypeName(modifier)) {
		if (modifier == "above" || modifier == "below") && (p.Type == storage.KindReference || p.Type == storage.KindToken) {
			return nil, fmt.Errorf("modifier :%s on a %s parameter needs hierarchies or subsumption: %w", modifier, p.TypeName, ErrUnsupported)
		}
		return nil, invalid("modifier :%s is not valid on %s parameter %s", modifier, p.TypeName, p.Code)
	}
	switch modifier {
	case "missing":
		return compileMissing(p, values)
	case "in", "not-in":
		var urls []string
		for _, v := range values {
			u, err := valueSetURLs(v)
			if err != nil {
				return nil, err
			}
			urls = append(urls, u...)
		}
		if len(values) > 1 {
			return nil, fmt.Errorf(":%s repeated (AND of value sets): %w", modifier, ErrUnsupported)
		}
		return nil, &ValueSetError{ResourceType: resourceType, Param: p.Code, Not: modifier == "not-in", ValueSets: urls}
	}
	if p.Code == "_id" && modifier == "" {
		return compileIDs(values)
	}
	param := p.Code
	if modifier == "of-type" {
		param = p.Code + ofTypeSuffix
	}
	ands := make([]storage.Expr, 0, len(values))
	for _, v := range values {
		alts := splitEscaped(v, ',')
		// Alternatives in convertible units apply to the canonical
		// companion parameter, the others to the values as written.
		var conds, canonConds, joins []storage.Expr
		for _, alt := range alts {
			c, canonical, err := r.cond(p, p.Type, modifier, alt)
			if err != nil {
				return nil, err
			}
			if canonical {
				canonConds = append(canonConds, c)
			} else {
				conds = append(conds, c)
			}
			if p.atRoot {
				joins = append(joins, compositeJoin(p, c, canonical))
			}
		}
		var ms []storage.Expr
		if len(conds) > 0 {
			ms = append(ms, storage.Match{Param: param, Kind: p.Type, Cond: one(conds, false)})
		}
		if len(canonConds) > 0 {
			ms = append(ms, storage.Match{Param: param + canonicalSuffix, Kind: p.Type, Cond: one(canonConds, false)})
		}
		if len(joins) > 0 {
			// One flat conjunction, the components first: a backend
			// driving it from one conjunct picks the code, not the
			// marker every such resource has.
			j := one(joins, false)
			if a, ok := j.(storage.And); ok {
				ms = append(ms, storage.And{Exprs: append(slices.Clip(a.Exprs), rootMarked(p))})
			} else {
				ms = append(ms, storage.And{Exprs: []storage.Expr{j, rootMarked(p)}})
			}
		}
		m := one(ms, false)
		if modifier == "not" {
			// :not selects resources with no matching token, including
			// those without any value (search.html#modifiers).
			ands = append(ands, storage.Not{Expr: m})
		} else {
			ands = append(ands, m)
		}
	}
	return one(ands, true), nil
}

// one collapses a single-element list; otherwise it builds And or Or.
func one(es []storage.Expr, and bool) storage.Expr {
	if len(es) == 1 {
		return es[0]
	}
	if and {
		return storage.And{Exprs: es}
	}
	return storage.Or{Exprs: es}
}

// cond compiles one alternative into a condition on a single entry;
// canonical reports that it applies to the entries in canonical units
// (see canonicalSuffix) rather than to the values as written.
func (r *Registry) cond(p *Param, kind storage.Kind, modifier, v string) (c storage.Expr, canonical bool, err error) {
	if v == "" {
		return nil, false, invalid("%s: empty value", p.Code)
	}
	switch kind {
	case storage.KindString:
		u, err := unescape(v)
		if err != nil {
			return nil, false, err
		}
		c, err = compileString(modifier, u)
		return c, false, err
	case storage.KindToken:
		if modifier == "of-type" {
			c, err = compileOfType(v)
			return c, false, err
		}
		c, err = compileToken(modifier, v)
		return c, false, err
	case storage.KindReference:
		c, err = r.compileReference(p, modifier, v)
		return c, false, err
	case storage.KindDate:
		u, err := unescape(v)
		if err != nil {
			return nil, false, err
		}
		c, err = r.compileDate(u)
		return c, false, err
	case storage.KindNumber:
		u, err := unescape(v)
		if err != nil {
			return nil, false, err
		}
		c, err = compileNumber(u)
		return c, false, err
	case storage.KindQuantity:
		return compileQuantity(v)
	case storage.KindURI:
		c, err = compileURI(modifier, v)
		return c, false, err
	case storage.KindComposite:
		return r.compileComposite(p, v)
	}
	return nil, false, fmt.Errorf("%s of type %s: %w", p.Code, p.TypeName, ErrUnsupported)
}

// compileMissing: ":missing=true" selects resources without any entry of the
// parameter, ":missing=false" those with at least one.
func compileMissing(p *Param, values []string) (storage.Expr, error) {
	ands := make([]storage.Expr, 0, len(values))
	for _, v := range values {
		var m storage.Expr = storage.Match{Param: p.Code, Kind: p.Type}
		if p.atRoot {
			// A marker stands only for combinations that exist.
			m = storage.Or{Exprs: []storage.Expr{m, rootMarked(p)}}
		}
		switch v {
		case "true":
			ands = append(ands, storage.Not{Expr: m})
		case "false":
			ands = append(ands, m)
		default:
			return nil, invalid(":missing takes true or false, not %q", v)
		}
	}
	return one(ands, true), nil
}

// compileIDs turns _id into the IDs node, which backends answer from the
// primary key rather than the index.
func compileIDs(values []string) (storage.Expr, error) {
	ands := make([]storage.Expr, 0, len(values))
	for _, v := range values {
		ids, err := SplitValues(v)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			if !isID(id) {
				return nil, invalid("_id %q is not a valid id", id)
			}
		}
		ands = append(ands, storage.IDs{IDs: ids})
	}
	return one(ands, true), nil
}
