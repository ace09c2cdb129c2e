package profile

import (
	"fmt"
	"strings"
)

// binding checks coded values against the ValueSet an element binds:
// required → error, extensible → warning when the code is not in it.
// Codes the server cannot judge (systems it does not hold, ValueSets it
// does not know) pass: refusing them would refuse valid data.
func (w *walker) binding(it item, e *Element) {
	b := e.Binding
	if b.Strength != "required" && b.Strength != "extensible" {
		return
	}
	type coded struct{ system, code string }
	var codes []coded
	hasText := false
	switch v := it.val.(type) {
	case string:
		switch it.typ {
		case "code", "string", "uri", "":
			codes = append(codes, coded{"", v})
		default:
			return
		}
	case map[string]any:
		switch it.typ {
		case "Coding":
			s, _ := v["system"].(string)
			c, _ := v["code"].(string)
			if c != "" {
				codes = append(codes, coded{s, c})
			}
		case "CodeableConcept":
			list, _ := v["coding"].([]any)
			for _, x := range list {
				m, _ := x.(map[string]any)
				s, _ := m["system"].(string)
				c, _ := m["code"].(string)
				if c != "" {
					codes = append(codes, coded{s, c})
				}
			}
			_, hasText = v["text"].(string)
		case "Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity", "MoneyQuantity":
			s, _ := v["system"].(string)
			c, _ := v["code"].(string)
			if c == "" {
				return
			}
			codes = append(codes, coded{s, c})
		default:
			return
		}
	default:
		return
	}
	rule := fmt.Sprintf("binding %s (%s)", b.ValueSet, b.Strength)
	sev := "error"
	if b.Strength == "extensible" {
		sev = "warning"
	}
	if len(codes) == 0 {
		if it.typ == "CodeableConcept" && !hasText && b.Strength == "required" {
			w.add("error", "code-invalid", it.path, rule, "no code provided, and a code is required from the ValueSet")
		}
		return
	}
	ex := w.r.terms.expand(b.ValueSet)
	if ex == nil {
		return
	}
	var refused []string
	for _, c := range codes {
		switch ex.contains(c.system, c.code) {
		case memberYes, memberUnknown:
			return
		}
		if c.system != "" {
			refused = append(refused, c.system+"#"+c.code)
		} else {
			refused = append(refused, c.code)
		}
	}
	w.add(sev, "code-invalid", it.path, rule, fmt.Sprintf("the code %s is not in the ValueSet", strings.Join(refused, ", ")))
}
