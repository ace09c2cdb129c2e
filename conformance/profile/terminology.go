package profile

import (
	"fmt"
	"strings"
	"sync"
)

// Terminology expands ValueSets locally: from the CodeSystems it holds
// (the official R4 ones and loaded ones), enumerated concepts, is-a and
// descendent-of filters, and included ValueSets. A system it cannot
// enumerate (LOINC, SNOMED CT, UCUM) makes the expansion "open" for that
// system: codes of it can be neither confirmed nor refused, and are let
// through, because refusing what cannot be checked would reject valid data.
type Terminology struct {
	mu        sync.RWMutex
	systems   map[string]*codeSystem
	valueSets map[string]map[string]any
	expanded  map[string]*expansion
}

type codeSystem struct {
	url           string
	complete      bool
	caseSensitive bool
	concepts      map[string]*concept
	order         []*concept
}

type concept struct {
	code     string
	parent   *concept
	children []*concept
	abstract bool
}

type expansion struct {
	codes map[string]map[string]bool // system -> code
	open  map[string]bool            // systems that could not be enumerated
	err   error
}

func newTerminology() *Terminology {
	return &Terminology{systems: map[string]*codeSystem{}, valueSets: map[string]map[string]any{}, expanded: map[string]*expansion{}}
}

func canonical(url string) string {
	if i := strings.IndexByte(url, '|'); i >= 0 {
		return url[:i]
	}
	return url
}

// addCodeSystem registers a CodeSystem resource.
func (t *Terminology) addCodeSystem(cs map[string]any) {
	url, _ := cs["url"].(string)
	if url == "" {
		return
	}
	content, _ := cs["content"].(string)
	sys := &codeSystem{url: url, complete: content == "complete", concepts: map[string]*concept{}}
	sys.caseSensitive, _ = cs["caseSensitive"].(bool)
	var walk func(list []any, parent *concept)
	walk = func(list []any, parent *concept) {
		for _, c := range list {
			cm, _ := c.(map[string]any)
			code, _ := cm["code"].(string)
			if code == "" {
				continue
			}
			k := &concept{code: code, parent: parent}
			props, _ := cm["property"].([]any)
			for _, p := range props {
				pm, _ := p.(map[string]any)
				if pm["code"] == "notSelectable" && pm["valueBoolean"] == true {
					k.abstract = true
				}
			}
			if parent != nil {
				parent.children = append(parent.children, k)
			}
			sys.concepts[code] = k
			sys.order = append(sys.order, k)
			sub, _ := cm["concept"].([]any)
			walk(sub, k)
		}
	}
	top, _ := cm(cs)["concept"].([]any)
	walk(top, nil)
	t.mu.Lock()
	t.systems[url] = sys
	t.expanded = map[string]*expansion{}
	t.mu.Unlock()
	// A CodeSystem's implicit all-codes ValueSet.
	if vs, _ := cs["valueSet"].(string); vs != "" {
		t.addValueSet(map[string]any{"url": vs, "compose": map[string]any{"include": []any{map[string]any{"system": url}}}})
	}
}

func cm(v any) map[string]any { m, _ := v.(map[string]any); return m }

// addValueSet registers a ValueSet resource.
func (t *Terminology) addValueSet(vs map[string]any) {
	url, _ := vs["url"].(string)
	if url == "" {
		return
	}
	t.mu.Lock()
	if _, ok := t.valueSets[url]; !ok || vs["compose"] != nil {
		t.valueSets[url] = vs
	}
	t.expanded = map[string]*expansion{}
	t.mu.Unlock()
}

// expand returns the expansion of a ValueSet, nil when it is unknown.
func (t *Terminology) expand(url string) *expansion {
	url = canonical(url)
	t.mu.RLock()
	ex, ok := t.expanded[url]
	t.mu.RUnlock()
	if ok {
		return ex
	}
	t.mu.RLock()
	ex = t.expandLocked(url, 0)
	t.mu.RUnlock()
	t.mu.Lock()
	t.expanded[url] = ex
	t.mu.Unlock()
	return ex
}

func (t *Terminology) expandLocked(url string, depth int) *expansion {
	vs, ok := t.valueSets[url]
	if !ok {
		return nil
	}
	ex := &expansion{codes: map[string]map[string]bool{}, open: map[string]bool{}}
	if depth > 10 {
		ex.err = fmt.Errorf("ValueSet %s includes itself", url)
		return ex
	}
	compose, _ := vs["compose"].(map[string]any)
	if compose == nil {
		// An expansion shipped with the ValueSet.
		if e, ok := vs["expansion"].(map[string]any); ok {
			list, _ := e["contains"].([]any)
			for _, c := range list {
				c := cm(c)
				sys, _ := c["system"].(string)
				code, _ := c["code"].(string)
				ex.add(sys, code)
			}
			return ex
		}
		ex.err = fmt.Errorf("ValueSet %s has neither compose nor expansion", url)
		return ex
	}
	incs, _ := compose["include"].([]any)
	for _, inc := range incs {
		part := t.includePart(cm(inc), depth)
		if part.err != nil {
			ex.err = part.err
		}
		ex.union(part)
	}
	excs, _ := compose["exclude"].([]any)
	for _, exc := range excs {
		part := t.includePart(cm(exc), depth)
		for sys, codes := range part.codes {
			for c := range codes {
				delete(ex.codes[sys], c)
			}
		}
	}
	return ex
}

func (ex *expansion) add(sys, code string) {
	if ex.codes[sys] == nil {
		ex.codes[sys] = map[string]bool{}
	}
	ex.codes[sys][code] = true
}

func (ex *expansion) union(o *expansion) {
	for sys, codes := range o.codes {
		for c := range codes {
			ex.add(sys, c)
		}
	}
	for sys := range o.open {
		ex.open[sys] = true
	}
}

// includePart expands one compose.include (or exclude).
func (t *Terminology) includePart(inc map[string]any, depth int) *expansion {
	ex := &expansion{codes: map[string]map[string]bool{}, open: map[string]bool{}}
	system, _ := inc["system"].(string)
	var fromVS []*expansion
	for _, v := range strings1(inc["valueSet"]) {
		sub := t.expandLocked(canonical(v), depth+1)
		if sub == nil {
			// An unknown imported ValueSet: nothing can be refused.
			sub = &expansion{codes: map[string]map[string]bool{}, open: map[string]bool{"*": true}}
		}
		fromVS = append(fromVS, sub)
	}
	if system != "" {
		sys := t.systems[system]
		concepts, _ := inc["concept"].([]any)
		filters, _ := inc["filter"].([]any)
		switch {
		case len(concepts) > 0:
			for _, c := range concepts {
				code, _ := cm(c)["code"].(string)
				ex.add(system, code)
			}
		case len(filters) > 0:
			if sys == nil || !sys.complete {
				ex.open[system] = true
				break
			}
			first := true
			for _, f := range filters {
				codes, ok := sys.filter(cm(f))
				if !ok {
					ex.open[system] = true
					break
				}
				if first {
					ex.codes[system] = codes
					first = false
					continue
				}
				for c := range ex.codes[system] {
					if !codes[c] {
						delete(ex.codes[system], c)
					}
				}
			}
		default:
			if sys == nil || !sys.complete {
				ex.open[system] = true
				break
			}
			for _, k := range sys.order {
				ex.add(system, k.code)
			}
		}
	}
	if len(fromVS) == 0 {
		return ex
	}
	// valueSet imports: the intersection of the imports (and of the
	// system part when there is one).
	acc := fromVS[0]
	if system != "" {
		acc = intersect(ex, acc)
	}
	for _, o := range fromVS[1:] {
		acc = intersect(acc, o)
	}
	return acc
}

func intersect(a, b *expansion) *expansion {
	out := &expansion{codes: map[string]map[string]bool{}, open: map[string]bool{}}
	for sys, codes := range a.codes {
		for c := range codes {
			if b.open[sys] || b.open["*"] || b.codes[sys][c] {
				out.add(sys, c)
			}
		}
	}
	for sys, codes := range b.codes {
		for c := range codes {
			if a.open[sys] || a.open["*"] {
				out.add(sys, c)
			}
		}
	}
	for sys := range a.open {
		if b.open[sys] || b.open["*"] {
			out.open[sys] = true
		}
	}
	return out
}

// filter applies one compose filter; ok is false for filters it does not
// implement (property filters, regex), which leave the system open.
func (cs *codeSystem) filter(f map[string]any) (map[string]bool, bool) {
	prop, _ := f["property"].(string)
	op, _ := f["op"].(string)
	value, _ := f["value"].(string)
	if prop != "concept" && prop != "code" {
		return nil, false
	}
	root := cs.concepts[value]
	out := map[string]bool{}
	var desc func(k *concept)
	desc = func(k *concept) {
		for _, c := range k.children {
			out[c.code] = true
			desc(c)
		}
	}
	switch op {
	case "is-a":
		if root != nil {
			out[root.code] = true
			desc(root)
		}
	case "descendent-of":
		if root != nil {
			desc(root)
		}
	case "is-not-a":
		skip := map[string]bool{}
		if root != nil {
			skip[root.code] = true
			var d func(k *concept)
			d = func(k *concept) {
				for _, c := range k.children {
					skip[c.code] = true
					d(c)
				}
			}
			d(root)
		}
		for _, k := range cs.order {
			if !skip[k.code] {
				out[k.code] = true
			}
		}
	case "in", "=":
		for _, v := range strings.Split(value, ",") {
			if cs.concepts[strings.TrimSpace(v)] != nil {
				out[strings.TrimSpace(v)] = true
			}
		}
	default:
		return nil, false
	}
	return out, true
}

// membership is the answer to "is this code in the ValueSet".
type membership int

const (
	memberUnknown membership = iota // cannot tell (open system, unknown ValueSet)
	memberYes
	memberNo
)

// contains checks a code (system may be empty for a bare code element).
func (ex *expansion) contains(system, code string) membership {
	if ex == nil {
		return memberUnknown
	}
	if system == "" {
		for _, codes := range ex.codes {
			if codes[code] {
				return memberYes
			}
		}
		if len(ex.open) > 0 {
			return memberUnknown
		}
		return memberNo
	}
	if ex.codes[system][code] {
		return memberYes
	}
	if ex.open[system] || ex.open["*"] {
		return memberUnknown
	}
	return memberNo
}

// codeKnown reports whether a code system knows the code: memberUnknown
// for a system it does not hold completely.
func (t *Terminology) codeKnown(system, code string) membership {
	t.mu.RLock()
	defer t.mu.RUnlock()
	sys := t.systems[system]
	if sys == nil || !sys.complete {
		return memberUnknown
	}
	if sys.concepts[code] != nil {
		return memberYes
	}
	return memberNo
}
