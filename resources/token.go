package resources

import (
	"fmt"
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

// ofTypeSuffix names the companion parameter that holds Identifier entries
// for :of-type. An Identifier of parameter "identifier" gives an ordinary
// entry {System: system, Code: value} and, when it has a type, one entry per
// type coding under parameter "identifier:of-type" with System = the type
// coding's system and Code = type code + "|" + value. Keeping them under a
// separate parameter name means ordinary token searches and :missing never
// see them.
const ofTypeSuffix = ":of-type"

// indexToken extracts token entries by the FHIR type of the node
// (search.html#token): codes and primitive values give Code; Coding gives
// System, Code and the folded display as Text; CodeableConcept gives one
// entry per coding and one for its text; Identifier gives system and value;
// ContactPoint gives its value (its system is a use category, not a code
// system, so it is not indexed as one).
func indexToken(p *Param, n node) []storage.Entry {
	e := storage.Entry{Param: p.Code, Kind: storage.KindToken}
	switch v := n.v.(type) {
	case bool:
		e.Code = fmt.Sprint(v)
		return []storage.Entry{e}
	case string:
		if v == "" {
			return nil
		}
		e.Code = v
		return []storage.Entry{e}
	case map[string]any:
		switch n.typ {
		case "Coding":
			return codingEntry(nil, p.Code, v)
		case "CodeableConcept":
			return codeableConceptEntries(nil, p.Code, v)
		case "Identifier":
			return identifierEntries(nil, p.Code, v)
		case "ContactPoint":
			e.Code, _ = v["value"].(string)
		default:
			// Quantity (valueQuantity used as token in a few R4 params)
			// and other complex types carry a code and system.
			e.System, _ = v["system"].(string)
			e.Code, _ = v["code"].(string)
		}
		if e.Code == "" {
			return nil
		}
		return []storage.Entry{e}
	}
	return nil
}

func codingEntry(out []storage.Entry, code string, c map[string]any) []storage.Entry {
	sys, _ := c["system"].(string)
	val, _ := c["code"].(string)
	disp, _ := c["display"].(string)
	if sys == "" && val == "" && disp == "" {
		return out
	}
	return append(out, storage.Entry{Param: code, Kind: storage.KindToken, System: sys, Code: val, Text: normalize(disp)})
}

func codeableConceptEntries(out []storage.Entry, code string, cc map[string]any) []storage.Entry {
	codings, _ := cc["coding"].([]any)
	for _, c := range codings {
		if m, ok := c.(map[string]any); ok {
			out = codingEntry(out, code, m)
		}
	}
	if t, _ := cc["text"].(string); t != "" {
		out = append(out, storage.Entry{Param: code, Kind: storage.KindToken, Text: normalize(t)})
	}
	return out
}

func identifierEntries(out []storage.Entry, code string, id map[string]any) []storage.Entry {
	sys, _ := id["system"].(string)
	val, _ := id["value"].(string)
	typ, _ := id["type"].(map[string]any)
	text := ""
	if typ != nil {
		text, _ = typ["text"].(string)
	}
	if sys != "" || val != "" {
		out = append(out, storage.Entry{Param: code, Kind: storage.KindToken, System: sys, Code: val, Text: normalize(text)})
	}
	if typ == nil || val == "" {
		return out
	}
	codings, _ := typ["coding"].([]any)
	for _, c := range codings {
		m, _ := c.(map[string]any)
		ts, _ := m["system"].(string)
		tc, _ := m["code"].(string)
		if tc != "" {
			out = append(out, storage.Entry{Param: code + ofTypeSuffix, Kind: storage.KindToken, System: ts, Code: tc + "|" + val})
		}
	}
	return out
}

// compileToken compiles one token value into an entry condition:
// "code" any system, "system|code", "|code" no system, "system|" any code
// in that system; :text is a folded prefix match on the display/text.
func compileToken(modifier, v string) (storage.Expr, error) {
	if modifier == "text" {
		u, err := unescape(v)
		if err != nil {
			return nil, err
		}
		return compileString("", u)
	}
	parts := splitEscaped(v, '|')
	if len(parts) > 2 {
		return nil, invalid("token %q has more than one unescaped '|'", v)
	}
	var vals [2]string
	for i, p := range parts {
		u, err := unescape(p)
		if err != nil {
			return nil, err
		}
		vals[i] = u
	}
	code := storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: vals[0]}
	if len(parts) == 1 {
		if vals[0] == "" {
			return nil, invalid("empty token value")
		}
		return code, nil
	}
	sys, val := vals[0], vals[1]
	code.Value = val
	sysCmp := storage.Cmp{Field: storage.FieldSystem, Op: storage.OpEq, Value: sys}
	switch {
	case sys == "" && val == "":
		return nil, invalid("token %q has neither system nor code", v)
	case val == "":
		return sysCmp, nil
	default:
		// "|code" asks for a code without a system: System Eq "".
		return storage.And{Exprs: []storage.Expr{sysCmp, code}}, nil
	}
}

// compileOfType compiles "typeSystem|typeCode|value" against the companion
// entries described at ofTypeSuffix.
func compileOfType(v string) (storage.Expr, error) {
	parts := splitEscaped(v, '|')
	if len(parts) != 3 {
		return nil, invalid(":of-type value %q must be system|code|value", v)
	}
	for i, p := range parts {
		u, err := unescape(p)
		if err != nil {
			return nil, err
		}
		parts[i] = u
	}
	if parts[1] == "" || parts[2] == "" {
		return nil, invalid(":of-type value %q needs a type code and a value", v)
	}
	code := storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: parts[1] + "|" + parts[2]}
	if parts[0] == "" {
		return code, nil
	}
	return storage.And{Exprs: []storage.Expr{storage.Cmp{Field: storage.FieldSystem, Op: storage.OpEq, Value: parts[0]}, code}}, nil
}

// Coding is a system and code, for TokenIn.
type Coding struct{ System, Code string }

// TokenIn builds the expression for token :in / :not-in once the caller has
// expanded the ValueSet named in a *ValueSetError: the resource has (or, for
// not, has no) code among codes. An empty expansion matches nothing (or
// everything for not).
func (r *Registry) TokenIn(resourceType, code string, codes []Coding, not bool) (storage.Expr, error) {
	p, ok := r.Param(resourceType, code)
	if !ok {
		return nil, fmt.Errorf("%s.%s: %w", resourceType, code, ErrUnknownParam)
	}
	if p.Type != storage.KindToken {
		return nil, invalid("%s is a %s parameter, :in needs a token", code, p.Type)
	}
	alts := make([]storage.Expr, 0, len(codes))
	for _, c := range codes {
		alts = append(alts, storage.And{Exprs: []storage.Expr{
			storage.Cmp{Field: storage.FieldSystem, Op: storage.OpEq, Value: c.System},
			storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: c.Code},
		}})
	}
	m := storage.Match{Param: p.Code, Kind: storage.KindToken, Cond: storage.Or{Exprs: alts}}
	if not {
		return storage.Not{Expr: m}, nil
	}
	return m, nil
}

// valueSetURLs unescapes the alternatives of :in / :not-in.
func valueSetURLs(raw string) ([]string, error) {
	urls, err := SplitValues(raw)
	if err != nil {
		return nil, err
	}
	for _, u := range urls {
		if strings.TrimSpace(u) == "" {
			return nil, invalid("empty value set URL")
		}
	}
	return urls, nil
}
