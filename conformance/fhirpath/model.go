package fhirpath

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
)

//go:generate go run ./internal/gen -types ../../../shared/fhir-r4/profiles-types.json -resources ../../../shared/fhir-r4/profiles-resources.json -out model.json

// modelJSON is the compact R4 type model produced by internal/gen from the
// official StructureDefinitions.
//
//go:embed model.json
var modelJSON []byte

type elemDef struct {
	Types  []string `json:"t"`
	Many   bool     `json:"m,omitempty"`
	Choice bool     `json:"c,omitempty"`
}

type typeDef struct {
	Base string              `json:"b,omitempty"`
	Kind string              `json:"k"`
	Elem map[string]*elemDef `json:"e,omitempty"`

	name string
	// byKey maps every JSON property name this type can carry (including
	// each expanded choice, e.g. valueQuantity) to its element and type.
	byKey map[string]keyRef
}

type keyRef struct {
	name string // element name without [x]
	elem *elemDef
	typ  string // the concrete FHIR type of the property
}

// Model is the FHIR R4 type model: element types, cardinality and the
// type hierarchy. It is immutable once loaded and safe to share.
type Model struct {
	types map[string]*typeDef
}

// loadModel decodes the embedded model once; the result is read-only.
var loadModel = sync.OnceValues(func() (*Model, error) {
	var raw map[string]*typeDef
	if err := json.Unmarshal(modelJSON, &raw); err != nil {
		return nil, fmt.Errorf("fhirpath: decode embedded model: %w", err)
	}
	for name, td := range raw {
		td.name = name
		td.byKey = make(map[string]keyRef, len(td.Elem))
		for en, ed := range td.Elem {
			if !ed.Choice {
				td.byKey[en] = keyRef{name: en, elem: ed, typ: ed.Types[0]}
				continue
			}
			for _, t := range ed.Types {
				td.byKey[en+upperFirst(t)] = keyRef{name: en, elem: ed, typ: t}
			}
		}
	}
	return &Model{types: raw}, nil
})

// R4 returns the embedded FHIR R4 model.
func R4() (*Model, error) { return loadModel() }

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// HasType reports whether name is a FHIR type, resource or backbone
// element path known to the model.
func (m *Model) HasType(name string) bool {
	_, ok := m.types[name]
	return ok
}

// IsResource reports whether name is a resource type.
func (m *Model) IsResource(name string) bool {
	td := m.types[name]
	return td != nil && td.Kind == "r"
}

// IsPrimitive reports whether name is a FHIR primitive type (string, code, dateTime…).
func (m *Model) IsPrimitive(name string) bool {
	td := m.types[name]
	return td != nil && td.Kind == "p"
}

// Base returns the parent type of name ("" for roots such as Element and Resource).
func (m *Model) Base(name string) string {
	if td := m.types[name]; td != nil {
		return td.Base
	}
	return ""
}

// IsA reports whether typ is name or derives from it (Age is a Quantity,
// Patient is a DomainResource, code is a string).
func (m *Model) IsA(typ, name string) bool {
	for i := 0; typ != "" && i < 16; i++ {
		if typ == name {
			return true
		}
		typ = m.Base(typ)
	}
	return false
}

// Element describes the element name of type typ: its possible types,
// whether it repeats, and whether it is a choice ([x]) element.
func (m *Model) Element(typ, name string) (types []string, many, choice, ok bool) {
	td := m.types[typ]
	if td == nil {
		return nil, false, false, false
	}
	ed := td.Elem[name]
	if ed == nil {
		return nil, false, false, false
	}
	return ed.Types, ed.Many, ed.Choice, true
}

// Property resolves a JSON property name (e.g. "valueQuantity") on typ to
// the element name ("value"), the concrete type ("Quantity") and whether
// it repeats.
func (m *Model) Property(typ, key string) (elem, propType string, many, ok bool) {
	td := m.types[typ]
	if td == nil {
		return "", "", false, false
	}
	r, found := td.byKey[key]
	if !found {
		return "", "", false, false
	}
	return r.name, r.typ, r.elem.Many, true
}
