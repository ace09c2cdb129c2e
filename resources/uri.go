package resources

import (
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

// indexURI extracts the URI as written (uri, url, canonical, oid, uuid).
func indexURI(p *Param, n node) []storage.Entry {
	s, ok := n.v.(string)
	if !ok || s == "" {
		return nil
	}
	return []storage.Entry{{Param: p.Code, Kind: storage.KindURI, Exact: s}}
}

// compileURI: the default is exact equality; :below matches URIs that start
// with the value; :above matches URIs the value starts with, cut at "/"
// boundaries ("http://a.org/fhir/ValueSet/x" finds ".../fhir/ValueSet/x",
// ".../fhir/ValueSet", ".../fhir" and "http://a.org").
func compileURI(modifier, v string) (storage.Expr, error) {
	u, err := unescape(v)
	if err != nil {
		return nil, err
	}
	if u == "" {
		return nil, invalid("empty uri value")
	}
	eq := func(s string) storage.Expr { return storage.Cmp{Field: storage.FieldExact, Op: storage.OpEq, Value: s} }
	switch modifier {
	case "":
		return eq(u), nil
	case "below":
		return storage.Cmp{Field: storage.FieldExact, Op: storage.OpPrefix, Value: u}, nil
	case "above":
		alts := []storage.Expr{eq(u)}
		rest := u
		// Do not cut inside the scheme and authority ("http://").
		floor := 0
		if i := strings.Index(u, "://"); i >= 0 {
			floor = i + 3
		}
		for {
			i := strings.LastIndexByte(rest, '/')
			if i < floor || i <= 0 {
				break
			}
			rest = rest[:i]
			alts = append(alts, eq(rest))
		}
		return storage.Or{Exprs: alts}, nil
	}
	return nil, invalid("modifier :%s is not valid on a uri parameter", modifier)
}
