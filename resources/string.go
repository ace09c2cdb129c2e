package resources

import (
	"github.com/anodyne-fhir/anodyne/storage"
)

// indexString extracts string entries. HumanName and Address are searched
// by any of their parts (search.html#string), so each part is one entry.
func indexString(p *Param, n node) []storage.Entry {
	switch n.typ {
	case "HumanName":
		m, _ := n.v.(map[string]any)
		return stringEntries(p.Code, m, "text", "family", "given", "prefix", "suffix")
	case "Address":
		m, _ := n.v.(map[string]any)
		return stringEntries(p.Code, m, "text", "line", "city", "district", "state", "postalCode", "country")
	}
	if s, ok := n.v.(string); ok {
		return stringEntry(nil, p.Code, s)
	}
	return nil
}

func stringEntries(code string, m map[string]any, keys ...string) []storage.Entry {
	var out []storage.Entry
	for _, k := range keys {
		switch v := m[k].(type) {
		case string:
			out = stringEntry(out, code, v)
		case []any:
			for _, x := range v {
				if s, ok := x.(string); ok {
					out = stringEntry(out, code, s)
				}
			}
		}
	}
	return out
}

func stringEntry(out []storage.Entry, code, s string) []storage.Entry {
	if s == "" {
		return out
	}
	return append(out, storage.Entry{Param: code, Kind: storage.KindString, Text: normalize(s), Exact: s})
}

// compileString: the default is a case- and accent-insensitive prefix match
// on the folded text, :exact compares the value as written and :contains
// looks for the folded value anywhere.
func compileString(modifier, v string) (storage.Expr, error) {
	if v == "" {
		return nil, invalid("empty string value")
	}
	folded := normalize(v)
	if folded == "" && modifier != "exact" {
		// An empty folded prefix would match every value.
		return nil, invalid("string value %q has no letters or digits", v)
	}
	switch modifier {
	case "":
		return storage.Cmp{Field: storage.FieldText, Op: storage.OpPrefix, Value: folded}, nil
	case "exact":
		return storage.Cmp{Field: storage.FieldExact, Op: storage.OpEq, Value: v}, nil
	case "contains":
		return storage.Cmp{Field: storage.FieldText, Op: storage.OpContains, Value: folded}, nil
	}
	return nil, invalid("modifier :%s is not valid on a string parameter", modifier)
}
