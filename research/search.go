package research

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// No membership oracle: a research client may search only on what the
// default rules keep as it is stored, so that no answer depends on a value
// hidden from it. Allowed: token parameters (codes, categories, status;
// not identifiers, telecoms nor the :text and :of-type modifiers, which
// reach hidden text), quantities and numbers (values are kept exactly),
// and references (in pseudonyms, translated here). Refused with 400:
// strings (names, addresses, free text), dates (the stored timeline is
// not the one the client sees), URIs, specials, _lastUpdated, _text,
// _content, _filter, _query, _list, chains or _has ending in a refused
// parameter, and _sort on anything but allowed tokens, numbers and
// quantities.

// hiddenTokens are token parameters over elements the rules remove.
var hiddenTokens = map[string]bool{"identifier": true, "telecom": true, "email": true, "phone": true}

// control parameters pass unchanged (they shape, page or include).
var control = map[string]bool{
	"_count": true, "_total": true, "_summary": true, "_elements": true, "_format": true, "_pretty": true, "_cursor": true, "_type": true,
	"_include": true, "_revinclude": true, "_include:iterate": true, "_revinclude:iterate": true, "_include:recurse": true, "_revinclude:recurse": true,
}

// noMatch replaces a reference the project never saw: a syntactically
// valid id no stored resource has, so the search answers "nothing" like
// any other unknown pseudonym.
const noMatch = "research-no-match"

func refuse(format string, args ...any) error {
	return &fhir.Error{Status: http.StatusBadRequest, Issues: []conformance.Issue{{
		Severity: "error", Code: "security",
		Diagnostics: "research access: " + fmt.Sprintf(format, args...),
	}}}
}

func (v *view) Search(ctx context.Context, types []string, params url.Values) (url.Values, error) {
	out := url.Values{}
	for name, values := range params {
		if control[name] {
			out[name] = values
			continue
		}
		if name == "_sort" {
			if err := v.checkSort(types, values); err != nil {
				return nil, err
			}
			out[name] = values
			continue
		}
		tv, err := v.param(ctx, types, name, values)
		if err != nil {
			return nil, err
		}
		out[name] = tv
	}
	return out, nil
}

// param checks one parameter (with chains and _has) on every searched
// type and returns its values in stored terms.
func (v *view) param(ctx context.Context, types []string, name string, values []string) ([]string, error) {
	if strings.HasPrefix(name, "_has:") {
		// _has:Type:ref:param — the terminal parameter is on Type.
		parts := strings.SplitN(name, ":", 4)
		if len(parts) != 4 {
			return values, nil // malformed: the FHIR layer answers it
		}
		return v.param(ctx, []string{parts[1]}, parts[3], values)
	}
	code, rest, chained := strings.Cut(name, ".")
	code, mod, _ := strings.Cut(code, ":")
	switch code {
	case "_id":
		if chained || mod != "" {
			return nil, refuse("%s: _id takes no modifier or chain", name)
		}
		return v.translateIDs(ctx, types, values)
	case "_lastUpdated", "_text", "_content", "_filter", "_query", "_list", "_source", "_tag", "_security", "_profile":
		return nil, refuse("%s: this parameter reaches metadata, text or dates the de-identification hides or shifts", name)
	}
	for _, typ := range types {
		p, ok := v.f.registry.Param(typ, code)
		if !ok {
			continue // unknown on this type: the FHIR layer ignores or refuses it
		}
		if chained {
			if p.Type != storage.KindReference {
				return nil, refuse("%s: %s is not a reference", name, code)
			}
			targets := p.Targets
			if mod != "" {
				targets = []string{mod}
			}
			if _, err := v.param(ctx, targets, rest, values); err != nil {
				return nil, err
			}
			continue
		}
		switch p.Type {
		case storage.KindToken:
			if hiddenTokens[code] || mod == "text" || mod == "of-type" {
				return nil, refuse("%s: it searches identifiers, contact details or free text, which are removed for research clients", name)
			}
		case storage.KindQuantity, storage.KindNumber:
		case storage.KindReference:
			if mod == "identifier" {
				return nil, refuse("%s: identifiers are removed for research clients", name)
			}
		case storage.KindComposite:
			if strings.Contains(code, "date") || strings.Contains(code, "string") {
				return nil, refuse("%s: one of its parts is a date or text the de-identification changes", name)
			}
		case storage.KindDate:
			return nil, refuse("%s: dates are shifted per patient for research clients, so a search on the stored timeline would reveal it; filter the de-identified results instead", name)
		default:
			return nil, refuse("%s: %s parameters search names, addresses, text or URLs, which are hidden from research clients", name, p.TypeName)
		}
	}
	if chained || strings.HasPrefix(name, "_has:") {
		return values, nil
	}
	// Reference values (of a non-chained parameter) are pseudonyms.
	for _, typ := range types {
		if p, ok := v.f.registry.Param(typ, code); ok && p.Type == storage.KindReference {
			targets := p.Targets
			if mod != "" && mod != "missing" {
				targets = []string{mod}
			}
			if mod == "missing" {
				return values, nil
			}
			return v.translateRefs(ctx, targets, values)
		}
	}
	return values, nil
}

func (v *view) checkSort(types []string, values []string) error {
	for _, val := range values {
		for _, f := range strings.Split(val, ",") {
			code := strings.TrimPrefix(strings.TrimSpace(f), "-")
			if code == "" {
				continue
			}
			if code == "_id" || code == "_lastUpdated" {
				return refuse("_sort=%s: the stored order of ids and update times is hidden from research clients", code)
			}
			for _, typ := range types {
				p, ok := v.f.registry.Param(typ, code)
				if !ok {
					continue
				}
				switch {
				case p.Type == storage.KindToken && !hiddenTokens[code], p.Type == storage.KindQuantity, p.Type == storage.KindNumber:
				default:
					return refuse("_sort=%s: sorting on a %s parameter would order results by values hidden from research clients", code, p.TypeName)
				}
			}
		}
	}
	return nil
}

// translateRefs turns reference values in pseudonyms ("Type/p", "p" or an
// absolute URL) into stored references; one the project never saw
// becomes noMatch.
func (v *view) translateRefs(ctx context.Context, targets []string, values []string) ([]string, error) {
	out := make([]string, 0, len(values))
	for _, val := range values {
		var parts []string
		for _, one := range strings.Split(val, ",") {
			typ, id, typed := cut(tail(one), '/')
			cands := targets
			if typed {
				cands = []string{typ}
			} else {
				id = one
			}
			resolved := ""
			for _, t := range cands {
				real, ok, err := v.f.resolve(ctx, v.project, t, id)
				if err != nil {
					return nil, err
				}
				if ok {
					resolved = t + "/" + real
					break
				}
			}
			if resolved == "" {
				t := "Patient"
				if len(cands) > 0 {
					t = cands[0]
				}
				resolved = t + "/" + noMatch
			}
			parts = append(parts, resolved)
		}
		out = append(out, strings.Join(parts, ","))
	}
	return out, nil
}

func (v *view) translateIDs(ctx context.Context, types []string, values []string) ([]string, error) {
	out := make([]string, 0, len(values))
	for _, val := range values {
		var parts []string
		for _, id := range strings.Split(val, ",") {
			resolved := noMatch
			for _, t := range types {
				real, ok, err := v.f.resolve(ctx, v.project, t, strings.TrimSpace(id))
				if err != nil {
					return nil, err
				}
				if ok {
					resolved = real
					break
				}
			}
			parts = append(parts, resolved)
		}
		out = append(out, strings.Join(parts, ","))
	}
	return slices.Clip(out), nil
}

// tail is the Type/id part of a relative or absolute reference.
func tail(ref string) string {
	parts := strings.Split(strings.TrimSpace(ref), "/")
	if len(parts) < 2 {
		return strings.TrimSpace(ref)
	}
	return parts[len(parts)-2] + "/" + parts[len(parts)-1]
}
