// Command gen builds the compact FHIR R4 type model embedded by package
// fhirpath from the official StructureDefinition bundles
// (profiles-types.json and profiles-resources.json).
//
// It owns only the translation from StructureDefinition snapshots into
// "type -> element -> type codes, cardinality, base type"; it must not know
// anything about FHIRPath evaluation. Run it through go:generate in package
// fhirpath with -types and -resources pointing at the R4 definitions.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
)

// typeDef and elemDef mirror the structures in fhirpath/model.go; the field
// names are short because the file is embedded in the binary.
type typeDef struct {
	Base string             `json:"b,omitempty"`
	Kind string             `json:"k"`
	Elem map[string]elemDef `json:"e,omitempty"`
}

type elemDef struct {
	Types  []string `json:"t"`
	Many   bool     `json:"m,omitempty"`
	Choice bool     `json:"c,omitempty"`
}

type bundle struct {
	Entry []struct {
		Resource json.RawMessage `json:"resource"`
	} `json:"entry"`
}

type structureDefinition struct {
	ResourceType   string `json:"resourceType"`
	ID             string `json:"id"`
	Kind           string `json:"kind"`
	Type           string `json:"type"`
	Abstract       bool   `json:"abstract"`
	Derivation     string `json:"derivation"`
	BaseDefinition string `json:"baseDefinition"`
	Snapshot       struct {
		Element []elementDefinition `json:"element"`
	} `json:"snapshot"`
}

type elementDefinition struct {
	Path             string `json:"path"`
	Max              string `json:"max"`
	ContentReference string `json:"contentReference"`
	Type             []struct {
		Code      string `json:"code"`
		Extension []struct {
			URL      string `json:"url"`
			ValueURL string `json:"valueUrl"`
		} `json:"extension"`
	} `json:"type"`
}

func main() {
	typesPath := flag.String("types", "", "path to profiles-types.json")
	resPath := flag.String("resources", "", "path to profiles-resources.json")
	out := flag.String("out", "model.json", "output file")
	flag.Parse()
	if err := run(*typesPath, *resPath, *out); err != nil {
		slog.Error("gen failed", "err", err)
		os.Exit(1)
	}
}

func run(typesPath, resPath, out string) error {
	model := map[string]*typeDef{}
	for _, p := range []string{typesPath, resPath} {
		raw, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		var b bundle
		if err := json.Unmarshal(raw, &b); err != nil {
			return fmt.Errorf("decode %s: %w", p, err)
		}
		for _, e := range b.Entry {
			var head struct {
				ResourceType string `json:"resourceType"`
			}
			if err := json.Unmarshal(e.Resource, &head); err != nil {
				return fmt.Errorf("decode entry in %s: %w", p, err)
			}
			if head.ResourceType != "StructureDefinition" {
				continue
			}
			var sd structureDefinition
			if err := json.Unmarshal(e.Resource, &sd); err != nil {
				return fmt.Errorf("decode entry in %s: %w", p, err)
			}
			if sd.Derivation == "constraint" {
				continue // profiles (SimpleQuantity, vital signs) are not types of their own
			}
			if err := addStructure(model, sd); err != nil {
				return fmt.Errorf("%s: %w", sd.ID, err)
			}
		}
	}
	enc, err := marshalSorted(model)
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, enc, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}

func addStructure(model map[string]*typeDef, sd structureDefinition) error {
	kind := map[string]string{"primitive-type": "p", "complex-type": "c", "resource": "r", "logical": "l"}[sd.Kind]
	if kind == "" {
		return fmt.Errorf("unknown kind %q", sd.Kind)
	}
	root := &typeDef{Kind: kind, Base: lastSegment(sd.BaseDefinition)}
	model[sd.Type] = root
	// Element paths are rooted at sd.Type; backbone elements become
	// types named after their path so that nested elements resolve.
	owners := map[string]*typeDef{sd.Type: root}
	for _, el := range sd.Snapshot.Element {
		dot := strings.LastIndexByte(el.Path, '.')
		if dot < 0 {
			continue
		}
		parentPath, name := el.Path[:dot], el.Path[dot+1:]
		owner := owners[parentPath]
		if owner == nil {
			return fmt.Errorf("element %s has no known parent", el.Path)
		}
		if kind == "p" && name == "value" {
			continue // the primitive's own value is the node itself in FHIRPath
		}
		def := elemDef{Many: el.Max != "1" && el.Max != "0"}
		if strings.HasSuffix(name, "[x]") {
			name = strings.TrimSuffix(name, "[x]")
			def.Choice = true
		}
		switch {
		case el.ContentReference != "":
			def.Types = []string{strings.TrimPrefix(el.ContentReference, "#")}
		case len(el.Type) == 1 && (el.Type[0].Code == "BackboneElement" || el.Type[0].Code == "Element") && hasChildren(sd, el.Path):
			bb := &typeDef{Kind: "b", Base: el.Type[0].Code}
			model[el.Path] = bb
			owners[el.Path] = bb
			def.Types = []string{el.Path}
		default:
			for _, t := range el.Type {
				def.Types = append(def.Types, typeCode(t.Code, t.Extension))
			}
		}
		if len(def.Types) == 0 {
			return fmt.Errorf("element %s has no type", el.Path)
		}
		if owner.Elem == nil {
			owner.Elem = map[string]elemDef{}
		}
		owner.Elem[name] = def
	}
	return nil
}

// typeCode maps the FHIRPath system type codes used for ids and primitive
// values back to the FHIR type named by the structuredefinition-fhir-type
// extension.
func typeCode(code string, ext []struct {
	URL      string `json:"url"`
	ValueURL string `json:"valueUrl"`
}) string {
	if !strings.HasPrefix(code, "http://hl7.org/fhirpath/") {
		return code
	}
	for _, e := range ext {
		if strings.HasSuffix(e.URL, "structuredefinition-fhir-type") && e.ValueURL != "" {
			return e.ValueURL
		}
	}
	return "string"
}

func hasChildren(sd structureDefinition, path string) bool {
	prefix := path + "."
	for _, el := range sd.Snapshot.Element {
		if strings.HasPrefix(el.Path, prefix) {
			return true
		}
	}
	return false
}

func lastSegment(url string) string {
	if i := strings.LastIndexByte(url, '/'); i >= 0 {
		return url[i+1:]
	}
	return url
}

// marshalSorted writes one type per line, sorted, so that regenerating
// yields a reviewable diff.
func marshalSorted(model map[string]*typeDef) ([]byte, error) {
	names := make([]string, 0, len(model))
	for n := range model {
		names = append(names, n)
	}
	sort.Strings(names)
	var sb strings.Builder
	sb.WriteString("{\n")
	for i, n := range names {
		v, err := json.Marshal(model[n])
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", n, err)
		}
		k, _ := json.Marshal(n)
		sb.Write(k)
		sb.WriteString(":")
		sb.Write(v)
		if i < len(names)-1 {
			sb.WriteString(",")
		}
		sb.WriteString("\n")
	}
	sb.WriteString("}\n")
	return []byte(sb.String()), nil
}
