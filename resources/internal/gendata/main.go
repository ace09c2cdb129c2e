// Command gendata trims the official R4 SearchParameter bundle and the
// CompartmentDefinitions down to the fields the registry reads, so that the
// embedded data stays small. It is run by hand (see resources/generate.go)
// against a copy of the HL7 package; the product never reads the source.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
)

// spKeys are the SearchParameter elements the registry uses.
var spKeys = []string{"resourceType", "id", "url", "name", "code", "base", "type", "expression", "target", "component", "modifier", "multipleOr", "comparator"}

func main() {
	src := flag.String("src", "/work/shared/fhir-r4", "directory holding search-parameters.json and compartments/")
	dst := flag.String("dst", "data", "output directory")
	flag.Parse()
	if err := run(*src, *dst); err != nil {
		slog.Error("gendata failed", "err", err)
		os.Exit(1)
	}
}

func run(src, dst string) error {
	var bundle struct {
		Entry []struct {
			Resource map[string]any `json:"resource"`
		} `json:"entry"`
	}
	if err := readJSON(filepath.Join(src, "search-parameters.json"), &bundle); err != nil {
		return err
	}
	params := make([]map[string]any, 0, len(bundle.Entry))
	for _, e := range bundle.Entry {
		out := map[string]any{}
		for _, k := range spKeys {
			if v, ok := e.Resource[k]; ok {
				out[k] = v
			}
		}
		params = append(params, out)
	}
	if err := writeJSON(filepath.Join(dst, "search-parameters.json"), params); err != nil {
		return err
	}

	files, err := filepath.Glob(filepath.Join(src, "compartments", "CompartmentDefinition-*.json"))
	if err != nil {
		return fmt.Errorf("list compartments: %w", err)
	}
	sort.Strings(files)
	var comps []map[string]any
	for _, f := range files {
		var cd map[string]any
		if err := readJSON(f, &cd); err != nil {
			return err
		}
		comps = append(comps, map[string]any{"code": cd["code"], "resource": cd["resource"]})
	}
	return writeJSON(filepath.Join(dst, "compartments.json"), comps)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
