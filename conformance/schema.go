package conformance

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v5"
)

// fhirSchema is the official FHIR R4 (4.0.1) JSON schema, unmodified; the
// patches it needs are applied in memory by loadSchema so that the file can
// be compared with its published original.
//
//go:embed definitions/fhir.schema.json
var fhirSchema []byte

// schemaURL is the name the patched schema is registered under; it never
// leaves the process (no schema is ever fetched over the network).
const schemaURL = "https://anodyne.invalid/fhir.schema.json"

// schemaSet holds the patched R4 schema and compiles the definition of each
// resource type on first use: compiling all 146 up front costs seconds,
// while a server sees a few dozen types.
type schemaSet struct {
	mu       sync.Mutex // guards compiler, which is not safe for concurrent use
	compiler *jsonschema.Compiler
	types    map[string]*lazySchema // fixed after newSchemaSet; safe to read concurrently
	// quick answers "certainly valid" for most resources without
	// jsonschema; immutable, safe to read concurrently.
	quick *quickSchema
}

type lazySchema struct {
	once   sync.Once
	schema *jsonschema.Schema
	err    error
}

func newSchemaSet() (*schemaSet, error) {
	doc, patched, err := patchSchema(fhirSchema)
	if err != nil {
		return nil, err
	}
	quick, err := newQuickSchema(doc)
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.Draft = jsonschema.Draft6
	c.LoadURL = func(u string) (io.ReadCloser, error) {
		return nil, fmt.Errorf("conformance: schema reference to %q outside the embedded R4 schema", u)
	}
	if err := c.AddResource(schemaURL, bytes.NewReader(patched)); err != nil {
		return nil, fmt.Errorf("conformance: loading R4 schema: %w", err)
	}
	s := &schemaSet{compiler: c, types: make(map[string]*lazySchema, len(resourceTypes)), quick: quick}
	for _, t := range resourceTypes {
		s.types[t] = &lazySchema{}
	}
	return s, nil
}

// patchSchema makes the official schema usable:
//   - the root oneOf over 146 types (and the same oneOf in ResourceList,
//     used by contained, Bundle.entry.resource and Parameters.parameter.resource)
//     makes validation cost grow with every type tried: measured at
//     0.04 MB/s, a denial of service. The root oneOf goes; ResourceList
//     becomes a permissive object, and the Validator validates each nested
//     resource against its own type, found from its resourceType.
//   - the fhirVersion enums stop at 4.0.0, so every R4 (4.0.1)
//     CapabilityStatement or StructureDefinition would be rejected.
//
// It returns the patched document both decoded and encoded.
func patchSchema(raw []byte) (map[string]any, []byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, nil, fmt.Errorf("conformance: decoding embedded R4 schema: %w", err)
	}
	defs, ok := doc["definitions"].(map[string]any)
	if !ok {
		return nil, nil, errors.New("conformance: embedded R4 schema has no definitions")
	}
	if _, ok := defs["ResourceList"]; !ok {
		return nil, nil, errors.New("conformance: embedded R4 schema has no ResourceList")
	}
	delete(doc, "oneOf")
	delete(doc, "discriminator")
	defs["ResourceList"] = map[string]any{"type": "object"}
	patched := 0
	for _, def := range defs {
		patched += patchFHIRVersion(def)
	}
	if patched == 0 {
		return nil, nil, errors.New("conformance: embedded R4 schema has no fhirVersion enum to patch")
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, nil, fmt.Errorf("conformance: encoding patched R4 schema: %w", err)
	}
	return doc, out, nil
}

// patchFHIRVersion adds "4.0.1" to every enum that lists "4.0.0" and
// returns how many it changed.
func patchFHIRVersion(node any) int {
	n := 0
	switch v := node.(type) {
	case map[string]any:
		if enum, ok := v["enum"].([]any); ok && contains(enum, "4.0.0") && !contains(enum, "4.0.1") {
			v["enum"] = append(enum, "4.0.1")
			n++
		}
		for _, child := range v {
			n += patchFHIRVersion(child)
		}
	case []any:
		for _, child := range v {
			n += patchFHIRVersion(child)
		}
	}
	return n
}

func contains(list []any, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// forType returns the compiled definition of a resource type.
func (s *schemaSet) forType(resourceType string) (*jsonschema.Schema, error) {
	l, ok := s.types[resourceType]
	if !ok {
		return nil, fmt.Errorf("conformance: no schema for resource type %q", resourceType)
	}
	l.once.Do(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		l.schema, l.err = s.compiler.Compile(schemaURL + "#/definitions/" + resourceType)
		if l.err != nil {
			l.err = fmt.Errorf("conformance: compiling schema of %s: %w", resourceType, l.err)
		}
	})
	return l.schema, l.err
}

// schemaIssues converts a schema validation failure of the resource res,
// located at base, into issues.
func schemaIssues(err error, res map[string]any, base path) []located {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return []located{{severity: "error", code: "exception", diagnostics: fmt.Sprintf("schema validation failed: %v", err), at: base}}
	}
	var out []located
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		at := pointerToPath(res, e.InstanceLocation, base)
		keyword := e.KeywordLocation[strings.LastIndexByte(e.KeywordLocation, '/')+1:]
		switch keyword {
		case "required":
			for _, name := range quotedNames(e.Message) {
				out = append(out, located{severity: "error", code: "required",
					diagnostics: fmt.Sprintf("missing required element %q", name), at: at.field(name)})
			}
			return
		case "additionalProperties":
			for _, name := range quotedNames(e.Message) {
				out = append(out, located{severity: "error", code: "structure",
					diagnostics: fmt.Sprintf("unknown element %q", name), at: at.field(name)})
			}
			return
		}
		code := "value"
		switch keyword {
		case "enum":
			code = "code-invalid"
		case "type", "minItems", "maxItems", "minProperties":
			code = "structure"
		}
		out = append(out, located{severity: "error", code: code, diagnostics: e.Message, at: at})
	}
	walk(ve)
	sort.SliceStable(out, func(i, j int) bool { return out[i].at.fhirPath("") < out[j].at.fhirPath("") })
	return out
}

// pointerToPath turns a JSON pointer into a path, using the instance to
// tell array indices from element names that happen to be digits.
func pointerToPath(res map[string]any, pointer string, base path) path {
	at := base
	var cur any = res
	if pointer == "" {
		return at
	}
	for _, tok := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch v := cur.(type) {
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(v) {
				return at.field(tok)
			}
			at, cur = at.at(i), v[i]
		case map[string]any:
			at, cur = at.field(tok), v[tok]
		default:
			return at.field(tok)
		}
	}
	return at
}

// quotedNames extracts the 'single-quoted' names of a jsonschema v5
// message (it quotes with ' and escapes ' and \ inside).
func quotedNames(msg string) []string {
	var names []string
	for i := 0; i < len(msg); i++ {
		if msg[i] != '\'' {
			continue
		}
		var b strings.Builder
		j := i + 1
		for ; j < len(msg) && msg[j] != '\''; j++ {
			if msg[j] == '\\' && j+1 < len(msg) {
				j++
			}
			b.WriteByte(msg[j])
		}
		names = append(names, b.String())
		i = j
	}
	return names
}
