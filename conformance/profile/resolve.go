package profile

import (
	"fmt"
	"reflect"
	"strings"
	"unsafe"

	"github.com/anodyne-fhir/anodyne/conformance/fhirpath"
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

// bundleScope is the enclosing Bundle of the resource being validated,
// indexed once so that resolving a reference does not scan the entries.
type bundleScope struct {
	entries []map[string]any
	history bool // a history Bundle holds several versions of a resource by design

	byURL    map[string][]map[string]any // fullUrl (without _history) -> resources
	byTypeID map[string][]map[string]any // "Type/id" of entries without fullUrl
	urlOf    map[unsafe.Pointer]string   // entry resource (the decoded map itself) -> its fullUrl
}

func newBundleScope(bundle map[string]any) *bundleScope {
	list, _ := bundle["entry"].([]any)
	b := &bundleScope{entries: make([]map[string]any, 0, len(list)), history: bundle["type"] == "history",
		byURL: map[string][]map[string]any{}, byTypeID: map[string][]map[string]any{}, urlOf: map[unsafe.Pointer]string{}}
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			continue
		}
		b.entries = append(b.entries, m)
		res, ok := m["resource"].(map[string]any)
		if !ok {
			continue
		}
		u, hasURL := m["fullUrl"].(string)
		b.urlOf[reflect.ValueOf(res).UnsafePointer()] = u
		if hasURL {
			k := stripHistory(u)
			b.byURL[k] = append(b.byURL[k], res)
		} else if typ, _ := res["resourceType"].(string); typ != "" {
			id, _ := res["id"].(string)
			b.byTypeID[typ+"/"+id] = append(b.byTypeID[typ+"/"+id], res)
		}
	}
	return b
}

// fullURLOf returns the fullUrl of the entry that holds res, and whether
// res is an entry's resource at all.
func (b *bundleScope) fullURLOf(res map[string]any) (string, bool) {
	u, ok := b.urlOf[reflect.ValueOf(res).UnsafePointer()]
	return u, ok
}

// resolve returns the local resource a reference designates (nil when it
// is not local), and a problem when it is local but not one resource: a
// version the Bundle does not hold, or several entries it could be.
func (w *walker) resolve(ref string) (map[string]any, string) {
	switch {
	case ref == "":
		return nil, ""
	case strings.HasPrefix(ref, "#"):
		return w.contained(ref[1:]), ""
	case w.bundle == nil:
		return nil, ""
	}
	ref, version := splitHistory(ref)
	if isAbsolute(ref) {
		return w.bundle.match(ref, version, w.bundle.byURL[ref])
	}
	if _, _, ok := typeAndID(ref); !ok {
		return nil, ""
	}
	if w.fullURL == "" {
		return w.bundle.match(ref, version, w.bundle.byTypeID[ref])
	}
	base, ok := restBase(w.fullURL)
	if !ok {
		return nil, ""
	}
	return w.bundle.match(ref, version, w.bundle.byURL[base+ref])
}

// match picks the entry a reference designates among the candidates found.
func (b *bundleScope) match(ref, version string, found []map[string]any) (map[string]any, string) {
	if len(found) == 0 {
		return nil, ""
	}
	if version != "" {
		var v []map[string]any
		for _, m := range found {
			if meta, _ := m["meta"].(map[string]any); meta["versionId"] == version {
				v = append(v, m)
			}
		}
		if len(v) == 0 {
			return nil, fmt.Sprintf("the Bundle holds %s but not its version %s", ref, version)
		}
		found = v
	}
	if len(found) > 1 && !b.history {
		return nil, fmt.Sprintf("%d entries of the Bundle match the reference (give the version)", len(found))
	}
	return found[len(found)-1], ""
}

// fullURLs checks that every entry's fullUrl is absolute (a URL or a URN),
// as references are resolved against it, and that a RESTful one (ending
// in Type/id) does not disagree with the resource's type and id
// (bundle.html: "fullUrl SHALL NOT disagree with the id in the resource").
func (w *walker) fullURLs(path string) {
	m, err := fhirpath.R4()
	if err != nil {
		return
	}
	for i, e := range w.bundle.entries {
		u, ok := e["fullUrl"].(string)
		if !ok {
			continue
		}
		at := fmt.Sprintf("%s.entry[%d].fullUrl", path, i)
		if !isAbsolute(u) {
			w.add("error", "value", at, "fullUrl", fmt.Sprintf("the fullUrl must be an absolute URL or a URN, not %q", u))
			continue
		}
		res, _ := e["resource"].(map[string]any)
		base, ok := restBase(u)
		if !ok || res == nil {
			continue
		}
		typ, id, ok := typeAndID(strings.TrimPrefix(stripHistory(u), base))
		rt, _ := res["resourceType"].(string)
		rid, _ := res["id"].(string)
		if ok && m.IsResource(typ) && (typ != rt || (rid != "" && id != rid)) {
			w.add("error", "value", at, "fullUrl", fmt.Sprintf("the fullUrl %q is a RESTful URL, so it must end with the resource's type and id (%s/%s)", u, rt, rid))
		}
	}
}

// splitHistory splits a /_history/version suffix off a reference.
func splitHistory(ref string) (string, string) {
	if i := strings.Index(ref, "/_history/"); i >= 0 {
		return ref[:i], ref[i+len("/_history/"):]
	}
	return ref, ""
}

func isAbsolute(ref string) bool {
	return strings.HasPrefix(ref, "urn:") || strings.Contains(ref, "://")
}

// stripHistory drops a /_history/version suffix.
func stripHistory(ref string) string {
	r, _ := splitHistory(ref)
	return r
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
