package profile

import (
	"reflect"
	"strings"
)

// Local resolution of references, as the R4 specification defines it for
// contained resources (#id, in the container) and for the entries of a
// Bundle (bundle.html#references): an absolute URL or URN matches an
// entry's fullUrl; a relative reference (Patient/1) is resolved against the
// base of the referencing entry's RESTful fullUrl. A relative reference
// from an entry whose fullUrl is a URN names a resource on a server, not
// in the Bundle, so it is not resolved here; an entry with no fullUrl at
// all (a collection assembled by hand) is matched by type and id among
// the entries without one.

// bundleScope is the enclosing Bundle of the resource being validated.
type bundleScope struct {
	entries []map[string]any
}

func newBundleScope(bundle map[string]any) *bundleScope {
	list, _ := bundle["entry"].([]any)
	b := &bundleScope{entries: make([]map[string]any, 0, len(list))}
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			b.entries = append(b.entries, m)
		}
	}
	return b
}

// fullURLOf returns the fullUrl of the entry that holds res, and whether
// res is an entry's resource at all.
func (b *bundleScope) fullURLOf(res map[string]any) (string, bool) {
	p := reflect.ValueOf(res).UnsafePointer()
	for _, e := range b.entries {
		if m, ok := e["resource"].(map[string]any); ok && reflect.ValueOf(m).UnsafePointer() == p {
			u, _ := e["fullUrl"].(string)
			return u, true
		}
	}
	return "", false
}

// resolve returns the local resource a reference designates, or nil.
func (w *walker) resolve(ref string) map[string]any {
	switch {
	case ref == "":
		return nil
	case strings.HasPrefix(ref, "#"):
		return w.contained(ref[1:])
	case w.bundle == nil:
		return nil
	}
	ref = stripHistory(ref)
	if isAbsolute(ref) {
		return w.bundle.byFullURL(ref)
	}
	typ, id, ok := typeAndID(ref)
	if !ok {
		return nil
	}
	if w.fullURL == "" {
		for _, e := range w.bundle.entries {
			if u, _ := e["fullUrl"].(string); u != "" {
				continue
			}
			if m, ok := e["resource"].(map[string]any); ok && m["resourceType"] == typ && m["id"] == id {
				return m
			}
		}
		return nil
	}
	base, ok := restBase(w.fullURL)
	if !ok {
		return nil
	}
	return w.bundle.byFullURL(base + ref)
}

func (b *bundleScope) byFullURL(u string) map[string]any {
	for _, e := range b.entries {
		if fu, _ := e["fullUrl"].(string); fu != "" && stripHistory(fu) == u {
			m, _ := e["resource"].(map[string]any)
			return m
		}
	}
	return nil
}

func isAbsolute(ref string) bool {
	return strings.HasPrefix(ref, "urn:") || strings.Contains(ref, "://")
}

// stripHistory drops a /_history/version suffix.
func stripHistory(ref string) string {
	if i := strings.Index(ref, "/_history/"); i >= 0 {
		return ref[:i]
	}
	return ref
}

// typeAndID splits a relative reference "Patient/1".
func typeAndID(ref string) (string, string, bool) {
	typ, id, ok := strings.Cut(ref, "/")
	if !ok || typ == "" || id == "" || strings.ContainsAny(id, "/?#") {
		return "", "", false
	}
	return typ, id, true
}

// restBase returns "http://x/fhir/" for the RESTful URL "http://x/fhir/Patient/1".
func restBase(fullURL string) (string, bool) {
	if !strings.Contains(fullURL, "://") {
		return "", false
	}
	u := strings.TrimSuffix(stripHistory(fullURL), "/")
	i := strings.LastIndexByte(u, '/')
	if i < 0 {
		return "", false
	}
	j := strings.LastIndexByte(u[:i], '/')
	if j < 0 {
		return "", false
	}
	return u[:j+1], true
}
