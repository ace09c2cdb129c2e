package conformance

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// quickSchema is the patched R4 schema compiled for one question only: is
// this decoded resource certainly valid? It understands the few keywords
// the R4 schema uses ($ref, type, properties, additionalProperties: false,
// required, enum, const, pattern, items) with jsonschema v5's draft-6
// meaning. A node with anything else is opaque and never certain.
//
// Valid resources are nearly all of them, and this walk costs a fraction of
// jsonschema's, which builds a location string per value. When it is not
// certain, jsonschema runs as before and its errors become the issues, so
// the outcome is the same as long as the walk is sound: it may call a valid
// resource uncertain, never an invalid one valid (see the differential
// tests and FuzzQuickSchema).
type quickSchema struct {
	defs map[string]*quickNode // by definition name; fixed after construction
}

type quickNode struct {
	ref      *quickNode // draft 6: a $ref replaces every sibling keyword
	opaque   bool
	kind     string // "", "string", "number", "boolean", "array", "object"
	enum     map[string]bool
	match    func(string) bool // pattern; nil when absent
	items    *quickNode
	props    map[string]*quickNode
	closed   bool // additionalProperties: false
	required []string
}

// maxRefChain bounds $ref-to-$ref hops; the R4 schema has one at most.
const maxRefChain = 8

func newQuickSchema(doc map[string]any) (*quickSchema, error) {
	defs, ok := doc["definitions"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("conformance: R4 schema has no definitions")
	}
	q := &quickSchema{defs: make(map[string]*quickNode, len(defs))}
	for name := range defs {
		q.defs[name] = &quickNode{}
	}
	c := quickCompiler{defs: q.defs, patterns: map[string]func(string) bool{}}
	for name, def := range defs {
		c.fill(q.defs[name], def)
	}
	// Resolve $ref chains now so that validation follows one pointer; a
	// chain that does not end (a cycle) makes the node opaque.
	for _, n := range c.nodes {
		if n.ref == nil {
			continue
		}
		target := n.ref
		for i := 0; target != nil && target.ref != nil; i++ {
			if i == maxRefChain {
				target = nil
				break
			}
			target = target.ref
		}
		if target == nil {
			n.ref, n.opaque = nil, true
		} else {
			n.ref = target
		}
	}
	return q, nil
}

type quickCompiler struct {
	defs     map[string]*quickNode
	patterns map[string]func(string) bool
	nodes    []*quickNode
}

func (c *quickCompiler) node(raw any) *quickNode {
	n := &quickNode{}
	c.fill(n, raw)
	return n
}

// fill compiles raw into n; whatever it cannot express makes n opaque.
func (c *quickCompiler) fill(n *quickNode, raw any) {
	c.nodes = append(c.nodes, n)
	m, ok := raw.(map[string]any)
	if !ok {
		n.opaque = true // boolean schemas are not used by R4
		return
	}
	if ref, ok := m["$ref"]; ok {
		s, _ := ref.(string)
		name, found := strings.CutPrefix(s, "#/definitions/")
		if target := c.defs[name]; found && target != nil {
			n.ref = target
		} else {
			n.opaque = true
		}
		return
	}
	for k, v := range m {
		switch k {
		case "description":
		case "type":
			switch s, _ := v.(string); s {
			case "string", "number", "boolean", "array", "object":
				n.kind = s
			default:
				n.opaque = true
			}
		case "enum", "const":
			list, ok := v.([]any)
			if k == "const" {
				list, ok = []any{v}, true
			}
			if !ok || n.enum != nil {
				n.opaque = true
				continue
			}
			n.enum = make(map[string]bool, len(list))
			for _, e := range list {
				s, ok := e.(string)
				if !ok {
					n.opaque = true
				}
				n.enum[s] = true
			}
		case "pattern":
			s, _ := v.(string)
			match, err := c.pattern(s)
			if err != nil {
				n.opaque = true
				continue
			}
			n.match = match
		case "items":
			if _, ok := v.(map[string]any); !ok {
				n.opaque = true
				continue
			}
			n.items = c.node(v)
		case "properties":
			props, ok := v.(map[string]any)
			if !ok {
				n.opaque = true
				continue
			}
			n.props = make(map[string]*quickNode, len(props))
			for name, p := range props {
				n.props[name] = c.node(p)
			}
		case "additionalProperties":
			if b, ok := v.(bool); !ok || b {
				n.opaque = true // only the closed form is used by R4
				continue
			}
			n.closed = true
		case "required":
			list, _ := v.([]any)
			for _, r := range list {
				s, ok := r.(string)
				if !ok {
					n.opaque = true
				}
				n.required = append(n.required, s)
			}
		default:
			n.opaque = true
		}
	}
}

// pattern compiles a pattern once per distinct text, with the same regexp
// engine as jsonschema v5. The two patterns met on every string of a
// resource get hand-written equivalents (see TestQuickPatterns).
func (c *quickCompiler) pattern(src string) (func(string) bool, error) {
	if f, ok := c.patterns[src]; ok {
		return f, nil
	}
	var f func(string) bool
	switch src {
	case `^[ \r\n\t\S]+$`: // R4 string: any rune but form feed (\s is ASCII-only in Go)
		f = func(s string) bool { return s != "" && strings.IndexByte(s, '\f') < 0 }
	case `^\S*$`: // R4 uri and friends
		f = func(s string) bool { return strings.IndexAny(s, " \t\n\f\r") < 0 }
	default:
		re, err := regexp.Compile(src)
		if err != nil {
			return nil, fmt.Errorf("conformance: schema pattern %q: %w", src, err)
		}
		f = re.MatchString
	}
	c.patterns[src] = f
	return f, nil
}

// certain reports whether the resource v certainly satisfies the
// definition of resourceType.
func (q *quickSchema) certain(resourceType string, v map[string]any) bool {
	n, ok := q.defs[resourceType]
	return ok && n.valid(v)
}

func (n *quickNode) valid(v any) bool {
	if n.ref != nil {
		n = n.ref
	}
	if n.opaque {
		return false
	}
	switch x := v.(type) {
	case string:
		if n.kind != "" && n.kind != "string" {
			return false
		}
		if n.enum != nil && !n.enum[x] {
			return false
		}
		return n.match == nil || n.match(x)
	case map[string]any:
		if (n.kind != "" && n.kind != "object") || n.enum != nil {
			return false
		}
		for k, val := range x {
			p, ok := n.props[k]
			if !ok {
				if n.closed {
					return false
				}
				continue
			}
			if !p.valid(val) {
				return false
			}
		}
		for _, r := range n.required {
			if _, ok := x[r]; !ok {
				return false
			}
		}
		return true
	case []any:
		if (n.kind != "" && n.kind != "array") || n.enum != nil {
			return false
		}
		if n.items != nil {
			for _, e := range x {
				if !n.items.valid(e) {
					return false
				}
			}
		}
		return true
	case json.Number:
		return (n.kind == "" || n.kind == "number") && n.enum == nil
	case bool:
		return (n.kind == "" || n.kind == "boolean") && n.enum == nil
	default:
		return false // null or a type the decoder never produces
	}
}
