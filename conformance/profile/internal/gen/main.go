// Command gen extracts from the official R4 definition bundles what the
// profile validator needs (StructureDefinition snapshots with cardinality,
// types, fixed and pattern values, bindings, slicing and constraints;
// CodeSystem concepts and ValueSet composes) and writes them as one
// gzip-compressed JSON document, plus the vital-signs profiles stripped of
// narrative. Everything else (definitions, comments, mappings) is dropped:
// the validator never reads it and it is most of the bytes.
package main

import (
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	shared := flag.String("shared", "../../../../shared/fhir-r4", "directory of the official R4 definitions")
	out := flag.String("out", "definitions", "output directory")
	flag.Parse()
	if err := run(*shared, *out); err != nil {
		log.Fatal(err)
	}
}

func run(shared, out string) error {
	var sds, vss, css []any
	for _, f := range []string{"profiles-types.json", "profiles-resources.json", "extension-definitions.json", "valuesets.json"} {
		b, err := readBundle(filepath.Join(shared, f))
		if err != nil {
			return err
		}
		for _, r := range b {
			switch r["resourceType"] {
			case "StructureDefinition":
				sds = append(sds, stripSD(r, false))
			case "ValueSet":
				vss = append(vss, stripVS(r))
			case "CodeSystem":
				css = append(css, stripCS(r))
			}
		}
	}
	doc := map[string]any{"structureDefinitions": sds, "valueSets": vss, "codeSystems": css}
	if err := writeGzip(filepath.Join(out, "core.json.gz"), doc); err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(shared, "vitalsigns-profiles", "StructureDefinition-*.json"))
	if err != nil {
		return err
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var sd map[string]any
		if err := json.Unmarshal(raw, &sd); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		b, err := json.MarshalIndent(stripSD(sd, true), "", " ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, "vitalsigns", filepath.Base(f)), append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("%d StructureDefinitions, %d ValueSets, %d CodeSystems, %d vital-signs profiles\n", len(sds), len(vss), len(css), len(files))
	return nil
}

func readBundle(path string) ([]map[string]any, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var b struct {
		Entry []struct {
			Resource map[string]any `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []map[string]any
	for _, e := range b.Entry {
		if e.Resource != nil {
			out = append(out, e.Resource)
		}
	}
	return out, nil
}

func keep(m map[string]any, keys ...string) map[string]any {
	out := map[string]any{}
	for _, k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

func stripSD(sd map[string]any, withDiff bool) map[string]any {
	out := keep(sd, "resourceType", "id", "url", "version", "name", "title", "status", "kind", "abstract", "type",
		"baseDefinition", "derivation", "fhirVersion", "context")
	for _, part := range []string{"snapshot", "differential"} {
		if part == "differential" && !withDiff {
			continue
		}
		p, _ := sd[part].(map[string]any)
		if p == nil {
			continue
		}
		els, _ := p["element"].([]any)
		var kept []any
		for _, e := range els {
			kept = append(kept, stripElement(e.(map[string]any)))
		}
		out[part] = map[string]any{"element": kept}
	}
	return out
}

func stripElement(e map[string]any) map[string]any {
	out := keep(e, "id", "path", "sliceName", "min", "max", "type", "contentReference", "slicing", "maxLength")
	for k, v := range e {
		if strings.HasPrefix(k, "fixed") || strings.HasPrefix(k, "pattern") {
			out[k] = v
		}
	}
	if b, ok := e["binding"].(map[string]any); ok {
		if vs, ok := b["valueSet"]; ok {
			out["binding"] = map[string]any{"strength": b["strength"], "valueSet": vs}
		}
	}
	if cs, ok := e["constraint"].([]any); ok {
		var kept []any
		for _, c := range cs {
			cm := c.(map[string]any)
			k := keep(cm, "key", "severity", "human", "expression", "source")
			kept = append(kept, k)
		}
		out["constraint"] = kept
	}
	if ts, ok := out["type"].([]any); ok {
		var kept []any
		for _, t := range ts {
			kept = append(kept, keep(t.(map[string]any), "code", "profile", "targetProfile"))
		}
		out["type"] = kept
	}
	return out
}

func stripVS(vs map[string]any) map[string]any {
	out := keep(vs, "resourceType", "url", "version", "name")
	if c, ok := vs["compose"].(map[string]any); ok {
		nc := map[string]any{}
		for _, part := range []string{"include", "exclude"} {
			list, _ := c[part].([]any)
			var kept []any
			for _, inc := range list {
				im := inc.(map[string]any)
				k := keep(im, "system", "version", "filter", "valueSet")
				if cs, ok := im["concept"].([]any); ok {
					var codes []any
					for _, cc := range cs {
						codes = append(codes, keep(cc.(map[string]any), "code"))
					}
					k["concept"] = codes
				}
				kept = append(kept, k)
			}
			if kept != nil {
				nc[part] = kept
			}
		}
		out["compose"] = nc
	}
	return out
}

func stripCS(cs map[string]any) map[string]any {
	out := keep(cs, "resourceType", "url", "version", "name", "content", "caseSensitive", "valueSet", "hierarchyMeaning")
	if c, ok := cs["concept"].([]any); ok {
		out["concept"] = stripConcepts(c)
	}
	return out
}

func stripConcepts(list []any) []any {
	var out []any
	for _, c := range list {
		cm := c.(map[string]any)
		k := keep(cm, "code")
		if sub, ok := cm["concept"].([]any); ok {
			k["concept"] = stripConcepts(sub)
		}
		if props, ok := cm["property"].([]any); ok {
			// "notSelectable" and "status" matter for expansions; the rest is display data.
			var kept []any
			for _, p := range props {
				pm := p.(map[string]any)
				if code, _ := pm["code"].(string); code == "notSelectable" || code == "status" || code == "deprecated" {
					kept = append(kept, pm)
				}
			}
			if kept != nil {
				k["property"] = kept
			}
		}
		out = append(out, k)
	}
	return out
}

func writeGzip(path string, v any) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	zw, err := gzip.NewWriterLevel(f, gzip.BestCompression)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(zw)
	if err := enc.Encode(v); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}
