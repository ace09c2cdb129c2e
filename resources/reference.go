package resources

import (
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

// indexReference extracts reference entries. A literal reference
// "Type/id" (or one under our base URL, or with a /_history suffix) gives
// RefType and RefID; any other absolute reference (another server,
// urn:uuid:, a canonical) gives RefURL, canonicals without "|version";
// Reference.identifier gives a separate entry with System and Code for
// :identifier. Contained references ("#x") are not indexed: they never
// resolve to a stored resource.
func (r *Registry) indexReference(p *Param, n node) []storage.Entry {
	var out []storage.Entry
	switch v := n.v.(type) {
	case string: // canonical or uri
		if e, ok := r.refEntry(p.Code, v, true); ok {
			out = append(out, e)
		}
	case map[string]any:
		if ref, _ := v["reference"].(string); ref != "" {
			if e, ok := r.refEntry(p.Code, ref, false); ok {
				out = append(out, e)
			}
		}
		if id, ok := v["identifier"].(map[string]any); ok {
			sys, _ := id["system"].(string)
			val, _ := id["value"].(string)
			if val != "" {
				out = append(out, storage.Entry{Param: p.Code, Kind: storage.KindReference, System: sys, Code: val})
			}
		}
	}
	return out
}

func (r *Registry) refEntry(code, ref string, canonical bool) (storage.Entry, bool) {
	e := storage.Entry{Param: code, Kind: storage.KindReference}
	if ref == "" || ref[0] == '#' {
		return e, false
	}
	if canonical {
		if i := strings.IndexByte(ref, '|'); i >= 0 {
			ref = ref[:i]
		}
	}
	if typ, id, ok := r.localRef(ref); ok {
		e.RefType, e.RefID = typ, id
		return e, true
	}
	e.RefURL = ref
	return e, true
}

// localRef splits a reference to a resource on this server: "Type/id",
// "Type/id/_history/v", or either under the configured base URL.
func (r *Registry) localRef(ref string) (typ, id string, ok bool) {
	if r.baseURL != "" && strings.HasPrefix(ref, r.baseURL+"/") {
		ref = ref[len(r.baseURL)+1:]
	}
	if strings.Contains(ref, ":") {
		return "", "", false // absolute URL or urn
	}
	segs := strings.Split(ref, "/")
	if len(segs) == 4 && segs[2] == "_history" {
		segs = segs[:2]
	}
	if len(segs) != 2 || !isTypeName(segs[0]) || !isID(segs[1]) {
		return "", "", false
	}
	return segs[0], segs[1], true
}

func isTypeName(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// isID checks the R4 id syntax: [A-Za-z0-9\-\.]{1,64}.
func isID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// compileReference compiles one reference value: "id" (any type, or the
// type of a ":Type" modifier), "Type/id", an absolute URL (ours becomes
// local), or with :identifier a token "system|value".
func (r *Registry) compileReference(p *Param, modifier, v string) (storage.Expr, error) {
	if modifier == "identifier" {
		return compileToken("", v)
	}
	u, err := unescape(v)
	if err != nil {
		return nil, err
	}
	if u == "" {
		return nil, invalid("empty reference value")
	}
	typeCmp := func(t string) storage.Expr {
		return storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: t}
	}
	idCmp := func(id string) storage.Expr {
		return storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: id}
	}
	if modifier != "" && !isTypeName(modifier) {
		return nil, invalid("modifier :%s is not valid on a reference parameter", modifier)
	}
	if modifier != "" && len(p.Targets) > 0 && !contains(p.Targets, modifier) {
		return nil, invalid("%s cannot refer to %s", p.Code, modifier)
	}
	if isID(u) {
		if modifier != "" {
			return storage.And{Exprs: []storage.Expr{typeCmp(modifier), idCmp(u)}}, nil
		}
		return idCmp(u), nil
	}
	if p.TypeName == "reference" {
		if i := strings.IndexByte(u, '|'); i >= 0 && strings.Contains(u, ":") {
			u = u[:i] // canonical|version: versions are not indexed
		}
	}
	if typ, id, ok := r.localRef(u); ok {
		if modifier != "" && modifier != typ {
			return nil, invalid("reference %q contradicts modifier :%s", u, modifier)
		}
		return storage.And{Exprs: []storage.Expr{typeCmp(typ), idCmp(id)}}, nil
	}
	if !strings.Contains(u, ":") {
		return nil, invalid("reference %q is neither an id, Type/id nor an absolute URL", u)
	}
	return storage.Cmp{Field: storage.FieldRefURL, Op: storage.OpEq, Value: u}, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
