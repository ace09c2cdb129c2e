package profile

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/anodyne-fhir/anodyne/conformance/fhirpath"
)

// StructureDef is a compiled StructureDefinition: its snapshot as a tree
// of elements. It is immutable once compiled.
type StructureDef struct {
	URL, Version, Name, Type, Kind, Derivation, BaseURL string
	Abstract                                            bool
	Root                                                *Element
	// JSON is the definition with its snapshot, as published.
	JSON map[string]any
}

// Element is one ElementDefinition of a snapshot with its children (by
// element name, choice elements as "value[x]") and, when it is sliced, its
// slices in definition order.
type Element struct {
	ID, Path, Name, SliceName string
	Min                       int
	Max                       int // -1 for "*"
	Types                     []TypeRef
	ContentRef                string
	Fixed, Pattern            any
	FixedKey, PatternKey      string // e.g. "fixedUri", for messages
	Binding                   *Binding
	Constraints               []Constraint
	Slicing                   *Slicing
	MaxLength                 int

	Children []*Element
	Slices   []*Element
	parent   *Element
}

// TypeRef is one ElementDefinition.type.
type TypeRef struct {
	Code           string
	Profiles       []string
	TargetProfiles []string
}

// Binding is an ElementDefinition.binding.
type Binding struct {
	Strength, ValueSet string
}

// Constraint is an invariant with its parsed FHIRPath expression (nil when
// it does not parse: reported as a warning at validation, never skipped silently).
type Constraint struct {
	Key, Severity, Human, Source, Expression string
	expr                                     *fhirpath.Expression
	parseErr                                 error
}

// Slicing is an ElementDefinition.slicing.
type Slicing struct {
	Discriminators []Discriminator
	Ordered        bool
	Rules          string // closed, open, openAtEnd
}

// Discriminator is one slicing.discriminator.
type Discriminator struct{ Type, Path string }

// child returns the child element for a JSON property name (choice
// elements match value[x] by prefix) and the concrete type it names.
func (e *Element) child(key string) (*Element, string) {
	for _, c := range e.Children {
		if c.Name == key {
			if len(c.Types) == 1 {
				return c, c.Types[0].Code
			}
			return c, ""
		}
	}
	for _, c := range e.Children {
		if base, ok := strings.CutSuffix(c.Name, "[x]"); ok && strings.HasPrefix(key, base) && len(key) > len(base) {
			suffix := key[len(base):]
			for _, t := range c.Types {
				if strings.EqualFold(t.Code, suffix) && upperFirst(t.Code) == suffix {
					return c, t.Code
				}
			}
			// A choice name whose type the element does not allow.
			if suffix[0] >= 'A' && suffix[0] <= 'Z' {
				return c, lowerFirst(suffix)
			}
		}
	}
	return nil, ""
}

func (e *Element) childNamed(name string) *Element {
	for _, c := range e.Children {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

// compile builds the element tree of a StructureDefinition's snapshot.
func compile(sd map[string]any) (*StructureDef, error) {
	out := &StructureDef{JSON: sd}
	out.URL, _ = sd["url"].(string)
	out.Version, _ = sd["version"].(string)
	out.Name, _ = sd["name"].(string)
	out.Type, _ = sd["type"].(string)
	out.Kind, _ = sd["kind"].(string)
	out.Derivation, _ = sd["derivation"].(string)
	out.BaseURL, _ = sd["baseDefinition"].(string)
	out.Abstract, _ = sd["abstract"].(bool)
	snap, _ := sd["snapshot"].(map[string]any)
	els, _ := snap["element"].([]any)
	if len(els) == 0 {
		return nil, fmt.Errorf("StructureDefinition %s has no snapshot", out.URL)
	}
	byID := map[string]*Element{}
	for i, raw := range els {
		m, ok := raw.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: snapshot.element[%d] is not an object", out.URL, i)
		}
		e, err := compileElement(m)
		if err != nil {
			return nil, fmt.Errorf("%s: snapshot.element[%d] (%s): %w", out.URL, i, e.ID, err)
		}
		if i == 0 {
			out.Root = e
			e.Name = e.Path
			byID[e.ID] = e
			continue
		}
		parentID, last := splitID(e.ID)
		name, slice, _ := strings.Cut(last, ":")
		e.Name = name
		if slice != "" {
			baseID := joinID(parentID, name)
			if i := strings.LastIndexByte(slice, '/'); i > 0 {
				// A reslice belongs to the slice it refines.
				baseID += ":" + slice[:i]
			}
			base := byID[baseID]
			if base == nil {
				return nil, fmt.Errorf("%s: slice %s has no sliced element", out.URL, e.ID)
			}
			if e.SliceName == "" {
				e.SliceName = slice
			}
			e.parent = base.parent
			base.Slices = append(base.Slices, e)
		} else {
			parent := byID[parentID]
			if parent == nil {
				return nil, fmt.Errorf("%s: element %s has no parent %s", out.URL, e.ID, parentID)
			}
			e.parent = parent
			parent.Children = append(parent.Children, e)
		}
		byID[e.ID] = e
	}
	return out, nil
}

// splitID splits "Observation.component:sys.code" into
// ("Observation.component:sys", "code"). Slice names may contain dots
// only after a colon, which R4 definitions never do.
func splitID(id string) (parent, last string) {
	i := strings.LastIndexByte(id, '.')
	if i < 0 {
		return "", id
	}
	return id[:i], id[i+1:]
}

func joinID(parent, last string) string {
	if parent == "" {
		return last
	}
	return parent + "." + last
}

func compileElement(m map[string]any) (*Element, error) {
	e := &Element{}
	e.Path, _ = m["path"].(string)
	e.ID, _ = m["id"].(string)
	if e.ID == "" {
		e.ID = e.Path
	}
	if e.Path == "" {
		return e, fmt.Errorf("element without path")
	}
	e.SliceName, _ = m["sliceName"].(string)
	e.Min = intOf(m["min"], 0)
	switch mx, _ := m["max"].(string); mx {
	case "*":
		e.Max = -1
	case "":
		e.Max = -1
	default:
		n, err := strconv.Atoi(mx)
		if err != nil || n < 0 {
			return e, fmt.Errorf("max %q is not a number or *", mx)
		}
		e.Max = n
	}
	e.MaxLength = intOf(m["maxLength"], 0)
	e.ContentRef, _ = m["contentReference"].(string)
	ts, _ := m["type"].([]any)
	for _, t := range ts {
		tm, _ := t.(map[string]any)
		tr := TypeRef{}
		tr.Code, _ = tm["code"].(string)
		tr.Profiles = strings1(tm["profile"])
		tr.TargetProfiles = strings1(tm["targetProfile"])
		// FHIRPath System types used for primitive value elements.
		if strings.HasPrefix(tr.Code, "http://hl7.org/fhirpath/System.") {
			tr.Code = "System." + strings.TrimPrefix(tr.Code, "http://hl7.org/fhirpath/System.")
		}
		e.Types = append(e.Types, tr)
	}
	for k, v := range m {
		switch {
		case strings.HasPrefix(k, "fixed"):
			e.Fixed, e.FixedKey = v, k
		case strings.HasPrefix(k, "pattern"):
			e.Pattern, e.PatternKey = v, k
		}
	}
	if b, ok := m["binding"].(map[string]any); ok {
		vs, _ := b["valueSet"].(string)
		st, _ := b["strength"].(string)
		if vs != "" {
			e.Binding = &Binding{Strength: st, ValueSet: vs}
		}
	}
	cs, _ := m["constraint"].([]any)
	for _, c := range cs {
		cm, _ := c.(map[string]any)
		con := Constraint{}
		con.Key, _ = cm["key"].(string)
		con.Severity, _ = cm["severity"].(string)
		con.Human, _ = cm["human"].(string)
		con.Source, _ = cm["source"].(string)
		con.Expression, _ = cm["expression"].(string)
		if con.Expression == "" {
			continue // XPath-only constraints have nothing we can run
		}
		con.expr, con.parseErr = fhirpath.Parse(lenientAs(con.Expression))
		e.Constraints = append(e.Constraints, con)
	}
	if s, ok := m["slicing"].(map[string]any); ok {
		sl := &Slicing{}
		sl.Ordered, _ = s["ordered"].(bool)
		sl.Rules, _ = s["rules"].(string)
		ds, _ := s["discriminator"].([]any)
		for _, d := range ds {
			dm, _ := d.(map[string]any)
			disc := Discriminator{}
			disc.Type, _ = dm["type"].(string)
			disc.Path, _ = dm["path"].(string)
			sl.Discriminators = append(sl.Discriminators, disc)
		}
		e.Slicing = sl
	}
	return e, nil
}

func intOf(v any, def int) int {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return int(n)
		}
	case float64:
		return int(x)
	case int:
		return x
	}
	return def
}

func strings1(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// lenientAs rewrites descendants().as(T) to descendants().ofType(T). R4's
// dom-3 applies as() to a whole collection, which FHIRPath N1 makes an
// error; the reference validator filters instead, and so do we.
func lenientAs(expr string) string {
	return strings.ReplaceAll(expr, "descendants().as(", "descendants().ofType(")
}
