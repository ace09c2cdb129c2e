package fhir

import (
	"context"
	"net/http"
	"slices"

	"github.com/anodyne-fhir/anodyne/storage"
)

// compartmentTypes are the R4 CompartmentDefinitions (compartmentdefinition.html).
var compartmentTypes = []string{"Patient", "Encounter", "RelatedPerson", "Practitioner", "Device"}

// SearchCompartment is the compartment search interaction.
func (s *Server) SearchCompartment(ctx context.Context, r ReadRequest) (ReadResult, error) {
	comp := r.Param("type")
	if !slices.Contains(compartmentTypes, comp) {
		return ReadResult{}, errNotFound("%q is not a compartment type", comp)
	}
	id := r.Param("id")
	if !ValidID(id) {
		return ReadResult{}, newError(http.StatusNotFound, codeInvalid, "invalid resource id %q: R4 ids are 1-64 of [A-Za-z0-9-.]", id)
	}
	spoken := id
	v, err := s.view(ctx)
	if err != nil {
		return ReadResult{}, err
	}
	if id, err = s.storedID(ctx, v, comp, id); err != nil {
		return ReadResult{}, err
	}
	typ := r.Param("comp")
	var types []string
	if typ == "*" {
		for _, t := range s.registry.ResourceTypes() {
			if len(s.registry.Compartment(comp, t)) > 0 || t == comp {
				types = append(types, t)
			}
		}
	} else {
		if !isResourceType(typ) {
			return ReadResult{}, errNotFound("%q is not a resource type", typ)
		}
		types = []string{typ}
	}
	restrict := map[string]storage.Expr{}
	var inScope []string
	for _, t := range types {
		if e := s.compartmentFilter(comp, id, t); e != nil {
			restrict[t] = e
			inScope = append(inScope, t)
		}
	}
	if len(inScope) == 0 {
		return ReadResult{}, errBadRequest("%s is not in the %s compartment", typ, comp)
	}
	b, err := s.searchBundle(ctx, searchScope{path: "/" + comp + "/" + spoken + "/" + typ, types: inScope, restrict: restrict}, r.Query, r.Strict)
	if err != nil {
		return ReadResult{}, err
	}
	return resourceResult(b)
}

// compartmentFilter selects the resources of typ in the compartment comp/id:
// those whose compartment parameters refer to it, and the focal resource
// itself. nil when typ is not in that compartment.
func (s *Server) compartmentFilter(comp, id, typ string) storage.Expr {
	var alts []storage.Expr
	if typ == comp {
		alts = append(alts, storage.IDs{IDs: []string{id}})
	}
	for _, code := range s.registry.Compartment(comp, typ) {
		p, ok := s.registry.Param(typ, code)
		if !ok || p.Type != storage.KindReference {
			continue
		}
		alts = append(alts, storage.Match{Param: code, Kind: storage.KindReference, Cond: storage.And{Exprs: []storage.Expr{
			storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: comp},
			storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: id},
		}}})
	}
	switch len(alts) {
	case 0:
		return nil
	case 1:
		return alts[0]
	}
	return storage.Or{Exprs: alts}
}
