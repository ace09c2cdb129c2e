package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
)

// maxChainDepth bounds chains and nested _has: each level is a join in the
// backend, and a client should not be able to ask for an unbounded one.
const maxChainDepth = 4

// compileParam compiles one search parameter (name as written, with its
// modifier, chain or _has prefix) for resource type typ. It resolves what
// the resources package leaves to the caller: chains, _has, token
// :in/:not-in against ValueSets stored here, and _list.
func (s *Server) compileParam(ctx context.Context, decs *searchDecisions, typ, name string, values []string, depth int) (storage.Expr, error) {
	if depth > maxChainDepth {
		return nil, errBadRequest("search parameter %q: chains and _has are limited to %d levels", name, maxChainDepth)
	}
	if strings.HasPrefix(name, "_has:") || name == "_has" {
		return s.compileHas(ctx, decs, typ, name, values, depth)
	}
	if head, rest, ok := strings.Cut(name, "."); ok {
		return s.compileChain(ctx, decs, typ, head, rest, values, depth)
	}
	code, modifier, _ := strings.Cut(name, ":")
	if code == "_list" {
		return s.compileList(ctx, typ, modifier, values)
	}
	if _, ok := s.registry.Param(typ, code); !ok {
		return nil, &ignored{why: "not a search parameter of " + typ}
	}
	e, err := s.registry.Compile(typ, code, modifier, values)
	var vse *resources.ValueSetError
	switch {
	case err == nil:
		return e, nil
	case errors.As(err, &vse):
		return s.compileValueSet(ctx, vse)
	case errors.Is(err, resources.ErrUnsupported):
		return nil, &ignored{why: err.Error()}
	default:
		return nil, errBadRequest("search parameter %s: %v", name, err)
	}
}

// compileChain handles "subject:Patient.name=x" and "subject.name=x"
// (search.html#chaining). Without a type modifier the chain runs through
// every target type that has the chained parameter.
func (s *Server) compileChain(ctx context.Context, decs *searchDecisions, typ, head, rest string, values []string, depth int) (storage.Expr, error) {
	code, target, _ := strings.Cut(head, ":")
	p, ok := s.registry.Param(typ, code)
	if !ok {
		return nil, &ignored{why: "not a search parameter of " + typ}
	}
	if p.Type != storage.KindReference {
		return nil, errBadRequest("search parameter %s.%s: only reference parameters can be chained, %s is a %s", head, rest, code, p.TypeName)
	}
	targets := p.Targets
	if target != "" {
		if !isResourceType(target) || len(p.Targets) > 0 && !slices.Contains(p.Targets, target) {
			return nil, errBadRequest("search parameter %s: %s cannot refer to %q", head, code, target)
		}
		targets = []string{target}
	}
	restCode, _, _ := strings.Cut(rest, ":")
	var alts []storage.Expr
	refused := false
	for _, t := range targets {
		if !strings.HasPrefix(rest, "_has") && !strings.Contains(rest, ".") && restCode != "_list" {
			if _, ok := s.registry.Param(t, restCode); !ok {
				continue
			}
		}
		td, err := decs.get(ctx, t)
		if err != nil {
			return nil, err
		}
		if !td.allowed {
			// Matching through a type the caller cannot read would reveal
			// its contents; such targets simply match nothing.
			refused = true
			continue
		}
		inner, err := s.compileParam(ctx, decs, t, rest, values, depth+1)
		if err != nil {
			var ig *ignored
			if errors.As(err, &ig) && target == "" {
				continue
			}
			return nil, err
		}
		alts = append(alts, storage.Chain{Param: code, Target: t, Where: and(inner, td.filter)})
	}
	if len(alts) == 0 {
		if refused {
			return storage.Or{}, nil
		}
		if target != "" || len(targets) == 0 {
			return nil, &ignored{why: fmt.Sprintf("%q is not a parameter of the types %s.%s refers to", rest, typ, code)}
		}
		// Known parameter on no readable target: nothing can match.
		return storage.Or{}, nil
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return storage.Or{Exprs: alts}, nil
}

// compileHas handles "_has:Observation:patient:code=x", nested to any
// depth up to maxChainDepth (search.html#has).
func (s *Server) compileHas(ctx context.Context, decs *searchDecisions, typ, name string, values []string, depth int) (storage.Expr, error) {
	parts := strings.SplitN(name, ":", 4)
	if len(parts) != 4 || parts[1] == "" || parts[2] == "" || parts[3] == "" {
		return nil, errBadRequest("_has parameter %q must be _has:Type:reference:parameter", name)
	}
	src, ref, rest := parts[1], parts[2], parts[3]
	if !isResourceType(src) {
		return nil, errBadRequest("_has parameter %q: %q is not a resource type", name, src)
	}
	p, ok := s.registry.Param(src, ref)
	if !ok || p.Type != storage.KindReference {
		return nil, errBadRequest("_has parameter %q: %s is not a reference parameter of %s", name, ref, src)
	}
	if len(p.Targets) > 0 && !slices.Contains(p.Targets, typ) {
		return nil, errBadRequest("_has parameter %q: %s.%s cannot refer to %s", name, src, ref, typ)
	}
	td, err := decs.get(ctx, src)
	if err != nil {
		return nil, err
	}
	if !td.allowed {
		return nil, newError(http.StatusForbidden, codeForbidden, "_has through %s: access denied", src)
	}
	inner, err := s.compileParam(ctx, decs, src, rest, values, depth+1)
	if err != nil {
		return nil, err
	}
	return storage.Has{Type: src, Param: ref, Where: and(inner, td.filter)}, nil
}

// compileValueSet resolves token :in / :not-in: each named ValueSet is
// looked up on this server by url (or as ValueSet/id) and expanded from
// its expansion.contains or its compose.include concept lists.
func (s *Server) compileValueSet(ctx context.Context, vse *resources.ValueSetError) (storage.Expr, error) {
	var codes []resources.Coding
	for _, u := range vse.ValueSets {
		vs, err := s.findValueSet(ctx, u)
		if err != nil {
			return nil, err
		}
		cs, err := expandValueSet(vs)
		if err != nil {
			return nil, errBadRequest("value set %s: %v", u, err)
		}
		codes = append(codes, cs...)
	}
	e, err := s.registry.TokenIn(vse.ResourceType, vse.Param, codes, vse.Not)
	if err != nil {
		return nil, errBadRequest("%v", err)
	}
	return e, nil
}

// findValueSet reads a ValueSet stored on this server, by canonical url or
// by a "ValueSet/id" reference.
func (s *Server) findValueSet(ctx context.Context, ref string) (map[string]any, error) {
	if id, ok := strings.CutPrefix(ref, "ValueSet/"); ok && ValidID(id) {
		rec, found, err := s.current(ctx, "ValueSet", id)
		if err != nil {
			return nil, err
		}
		if found {
			return decodeRecord(rec)
		}
	}
	f, err := s.registry.Compile("ValueSet", "url", "", []string{escapeValue(ref)})
	if err != nil {
		return nil, errBadRequest("value set %q: %v", ref, err)
	}
	page, err := s.backend.Search(ctx, storage.Query{Types: []string{"ValueSet"}, Filter: f, Count: 2})
	if err != nil {
		return nil, fmt.Errorf("looking up value set %s: %w", ref, err)
	}
	switch len(page.Records) {
	case 0:
		return nil, errBadRequest("value set %q is not known to this server", ref)
	case 1:
		return decodeRecord(page.Records[0])
	}
	return nil, errBadRequest("value set %q is ambiguous: several ValueSets have this url", ref)
}

// escapeValue escapes a literal for use as a search value.
func escapeValue(v string) string {
	return strings.NewReplacer(`\`, `\\`, ",", `\,`, "|", `\|`, "$", `\$`).Replace(v)
}

// expandValueSet lists the codes of a ValueSet. An expansion, when
// present, is authoritative; otherwise compose.include concept lists are
// used (minus compose.exclude). Intensional definitions (filters, whole
// code systems, imported value sets) need a terminology server and are
// refused rather than silently expanded to nothing.
func expandValueSet(vs map[string]any) ([]resources.Coding, error) {
	if exp, ok := vs["expansion"].(map[string]any); ok {
		var out []resources.Coding
		var walk func(v any)
		walk = func(v any) {
			list, _ := v.([]any)
			for _, c := range list {
				m, _ := c.(map[string]any)
				sys, _ := m["system"].(string)
				code, _ := m["code"].(string)
				if code != "" {
					out = append(out, resources.Coding{System: sys, Code: code})
				}
				walk(m["contains"])
			}
		}
		walk(exp["contains"])
		return out, nil
	}
	compose, _ := vs["compose"].(map[string]any)
	if compose == nil {
		return nil, errors.New("has neither an expansion nor a compose")
	}
	collect := func(key string) ([]resources.Coding, error) {
		list, _ := compose[key].([]any)
		var out []resources.Coding
		for _, inc := range list {
			m, _ := inc.(map[string]any)
			sys, _ := m["system"].(string)
			concepts, _ := m["concept"].([]any)
			if m["filter"] != nil || m["valueSet"] != nil || len(concepts) == 0 {
				return nil, fmt.Errorf("compose.%s needs a terminology server (filters, whole code systems or imported value sets are not expanded here)", key)
			}
			for _, c := range concepts {
				cm, _ := c.(map[string]any)
				if code, _ := cm["code"].(string); code != "" {
					out = append(out, resources.Coding{System: sys, Code: code})
				}
			}
		}
		return out, nil
	}
	inc, err := collect("include")
	if err != nil {
		return nil, err
	}
	exc, err := collect("exclude")
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(inc, func(c resources.Coding) bool { return slices.Contains(exc, c) }), nil
}

// compileList handles _list=id (search.html#list): the resources of typ
// that the List's entries refer to. The List itself must be readable.
func (s *Server) compileList(ctx context.Context, typ, modifier string, values []string) (storage.Expr, error) {
	if modifier != "" {
		return nil, &ignored{why: "_list takes no modifier"}
	}
	var ands []storage.Expr
	for _, v := range values {
		if !ValidID(v) {
			return nil, errBadRequest("_list: %q is not a List id (functional lists such as $current-problems are not supported)", v)
		}
		rec, found, err := s.current(ctx, "List", v)
		if err != nil {
			return nil, err
		}
		ids := []string{}
		if found {
			res, err := decodeRecord(rec)
			if err != nil {
				return nil, err
			}
			if err := s.checkResource(ctx, ActionRead, "List", v, res); err != nil {
				return nil, err
			}
			entries, _ := res["entry"].([]any)
			for _, e := range entries {
				ref, _ := jsonAt(e, "item", "reference").(string)
				ref = strings.TrimPrefix(ref, s.base+"/")
				if t, id, ok := strings.Cut(ref, "/"); ok && t == typ && ValidID(id) {
					ids = append(ids, id)
				}
			}
		}
		ands = append(ands, storage.IDs{IDs: ids})
	}
	return and(ands...), nil
}

// jsonAt walks decoded JSON by object keys.
func jsonAt(v any, keys ...string) any {
	for _, k := range keys {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	return v
}

func isResourceType(t string) bool {
	return slices.Contains(conformance.ResourceTypes(), t)
}
