package fhir

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// search_elements.json lists, per resource type, the top-level elements
// marked isSummary and those with min > 0 in the R4 StructureDefinitions
// (profiles-resources.json); a choice element "value[x]" is written "value*".
//
//go:embed search_elements.json
var elementsJSON []byte

type typeElements struct {
	Summary   []string `json:"summary"`
	Mandatory []string `json:"mandatory"`
}

// elementTable parses the embedded table once; the result is never
// modified, so it is a constant in all but syntax.
var elementTable = sync.OnceValues(func() (map[string]typeElements, error) {
	var m map[string]typeElements
	if err := json.Unmarshal(elementsJSON, &m); err != nil {
		return nil, fmt.Errorf("embedded search_elements.json: %w", err)
	}
	return m, nil
})

// subsettedTag marks a resource that is not complete (search.html#summary).
var subsettedTag = map[string]any{
	"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
	"code":   "SUBSETTED",
}

// shaping returns what _summary / _elements do to an entry's resource,
// or nil when it is sent whole. It runs inside emit, before the view.
func (req searchRequest) shaping() shaping {
	if req.Summary == "" && len(req.Elements) == 0 {
		return nil
	}
	return func(typ string, res map[string]any) error {
		table, err := elementTable()
		if err != nil {
			return err
		}
		te := table[typ]
		var keep func(string) bool
		switch {
		case req.Summary == "true":
			keep = func(k string) bool { return hasElement(te.Summary, k) || hasElement(te.Mandatory, k) }
		case req.Summary == "text":
			keep = func(k string) bool { return k == "text" || hasElement(te.Mandatory, k) }
		case req.Summary == "data":
			keep = func(k string) bool { return k != "text" }
		default:
			keep = func(k string) bool {
				return hasElement(te.Mandatory, k) || slices.Contains(req.Elements, k) || choiceIn(req.Elements, k)
			}
		}
		for k := range res {
			switch k {
			case "resourceType", "id", "meta":
				continue
			}
			if !keep(k) {
				delete(res, k)
			}
		}
		meta, _ := res["meta"].(map[string]any)
		if meta == nil {
			meta = map[string]any{}
			res["meta"] = meta
		}
		tags, _ := meta["tag"].([]any)
		meta["tag"] = append(tags, subsettedTag)
		return nil
	}
}

// hasElement matches a JSON key against element names, where "value*"
// stands for every type of a choice element (valueQuantity, valueString…).
func hasElement(names []string, key string) bool {
	for _, n := range names {
		if n == key {
			return true
		}
		if p, ok := strings.CutSuffix(n, "*"); ok && strings.HasPrefix(key, p) && len(key) > len(p) && key[len(p)] >= 'A' && key[len(p)] <= 'Z' {
			return true
		}
	}
	return false
}

// choiceIn lets _elements=value select valueQuantity and its siblings.
func choiceIn(elements []string, key string) bool {
	for _, e := range elements {
		if strings.HasPrefix(key, e) && len(key) > len(e) && key[len(e)] >= 'A' && key[len(e)] <= 'Z' {
			return true
		}
	}
	return false
}
