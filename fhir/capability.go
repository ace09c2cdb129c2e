package fhir

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Capabilities is the capabilities interaction.
func (s *Server) Capabilities(context.Context, ReadRequest) (ReadResult, error) {
	// Custom SearchParameters change the registry while the server runs:
	// once there are any, the statement is rebuilt so that it lists them
	// (a few milliseconds, for a document clients fetch once).
	if !s.hasCustomParams() {
		return ReadResult{Status: http.StatusOK, Raw: s.capability}, nil
	}
	raw, err := s.capabilityStatement()
	if err != nil {
		return ReadResult{}, fmt.Errorf("building CapabilityStatement: %w", err)
	}
	return ReadResult{Status: http.StatusOK, Raw: raw}, nil
}

// hasCustomParams reports whether any parameter was added at runtime.
func (s *Server) hasCustomParams() bool {
	for _, t := range s.registry.ResourceTypes() {
		for _, p := range s.registry.Params(t) {
			if p.Custom {
				return true
			}
		}
	}
	return false
}

// capabilityStatement generates the CapabilityStatement from the route
// table (which interactions have handlers), the R4 type list (which types
// the routes accept) and the search-parameter registry (what search
// understands), so that it claims nothing the server does not do.
func (s *Server) capabilityStatement() ([]byte, error) {
	var typeCodes, systemCodes, typeOps []string
	var sysOps []any
	fixedOps := map[string][]any{} // operations of one type only (Patient/$export)
	bundles := false
	for _, r := range routeTable() {
		switch {
		case r.code == "":
			continue // not an interaction (status endpoints)
		case r.bulk && s.bulk == nil:
			continue // routed, but answers 501 without an export directory
		case strings.HasPrefix(r.code, "$") && (r.level == levelSystem || r.typ != ""):
			op := map[string]any{"name": strings.TrimPrefix(r.code, "$"), "definition": operationDefinition(r)}
			if slices.ContainsFunc(fixedOps[r.typ], func(o any) bool { return o.(map[string]any)["name"] == op["name"] }) {
				continue // GET and POST of one operation
			}
			if r.typ == "" {
				sysOps = append(sysOps, op)
			} else {
				fixedOps[r.typ] = append(fixedOps[r.typ], op)
			}
		case strings.HasPrefix(r.code, "$"):
			if !slices.Contains(typeOps, r.code) {
				typeOps = append(typeOps, r.code)
			}
		case r.code == "transaction":
			bundles = true
		case r.level == levelSystem:
			if r.code != "capabilities" && !slices.Contains(systemCodes, r.code) {
				systemCodes = append(systemCodes, r.code)
			}
		default:
			if !slices.Contains(typeCodes, r.code) {
				typeCodes = append(typeCodes, r.code)
			}
		}
	}
	for _, op := range s.patientOps {
		fixedOps["Patient"] = append(fixedOps["Patient"], map[string]any{"name": op.Name, "definition": op.Definition["url"]})
	}
	for _, op := range s.resOps {
		fixedOps[op.Type] = append(fixedOps[op.Type], map[string]any{"name": op.Name, "definition": op.Definition["url"]})
	}
	if bundles {
		// One route serves both Bundle types; a transaction is claimed
		// only on a store whose multi-write commit is all-or-nothing.
		if s.atomicCommit(context.Background()) {
			systemCodes = append(systemCodes, "transaction")
		}
		systemCodes = append(systemCodes, "batch")
	}
	interactions := func(codes []string) []any {
		out := make([]any, len(codes))
		for i, c := range codes {
			out[i] = map[string]any{"code": c}
		}
		return out
	}
	var ops, patientOps []any
	for _, op := range typeOps {
		name := strings.TrimPrefix(op, "$")
		if op == "$everything" {
			patientOps = append(patientOps, map[string]any{
				"name":       name,
				"definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
			})
			continue
		}
		ops = append(ops, map[string]any{
			"name":       name,
			"definition": "http://hl7.org/fhir/OperationDefinition/Resource-" + name,
		})
	}
	var resources []any
	for _, typ := range conformance.ResourceTypes() {
		var params []any
		for _, p := range s.registry.Params(typ) {
			if p.Type == 0 {
				continue // special parameters have no stored values to search
			}
			sp := map[string]any{"name": p.Code, "type": p.TypeName}
			if p.URL != "" {
				sp["definition"] = p.URL
			}
			params = append(params, sp)
		}
		r := map[string]any{
			"type":              typ,
			"profile":           "http://hl7.org/fhir/StructureDefinition/" + typ,
			"interaction":       interactions(typeCodes),
			"versioning":        "versioned-update",
			"readHistory":       true,
			"updateCreate":      true,
			"conditionalCreate": true,
			"conditionalRead":   "full-support",
			"conditionalUpdate": true,
			"conditionalDelete": "single",
			"operation":         ops,
		}
		if typ == "Patient" {
			r["operation"] = append(slices.Clone(ops), patientOps...)
		}
		if extra := fixedOps[typ]; len(extra) > 0 {
			r["operation"] = append(slices.Clone(r["operation"].([]any)), extra...)
		}
		if len(params) > 0 {
			r["searchParam"] = params
			incs := []any{"*"}
			for _, p := range s.registry.Params(typ) {
				if p.Type == storage.KindReference {
					incs = append(incs, typ+":"+p.Code)
				}
			}
			r["searchInclude"] = incs
		}
		resources = append(resources, r)
	}
	rest := map[string]any{
		"mode":        "server",
		"compartment": compartmentURLs(),
		"resource":    resources,
		"interaction": interactions(systemCodes),
		"searchParam": []any{
			map[string]any{"name": "_count", "type": "number"},
			map[string]any{"name": "_sort", "type": "string"},
			map[string]any{"name": "_total", "type": "token"},
			map[string]any{"name": "_summary", "type": "token"},
			map[string]any{"name": "_elements", "type": "string"},
			map[string]any{"name": "_type", "type": "token"},
			map[string]any{"name": "_list", "type": "token"},
			map[string]any{"name": "_has", "type": "string"},
		},
	}
	if len(sysOps) > 0 {
		rest["operation"] = sysOps
	}
	if s.security != nil {
		rest["security"] = s.security
	}
	cs := map[string]any{
		"resourceType": "CapabilityStatement",
		"status":       "active",
		"date":         formatInstant(now()),
		"publisher":    "Anodyne",
		"kind":         "instance",
		"software":     map[string]any{"name": "Anodyne"},
		"implementation": map[string]any{
			"description": "Anodyne FHIR R4 server",
			"url":         s.base,
		},
		"fhirVersion": "4.0.1",
		"format":      []any{mimeFHIRJSON, "json"},
		"patchFormat": []any{mimeJSONPatch},
		"rest":        []any{rest},
	}
	if s.bulk != nil {
		cs["instantiates"] = []any{"http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"}
	}
	if s.capHook != nil {
		s.capHook(cs)
	}
	return EncodeResource(cs)
}

// operationDefinition is the canonical URL of the OperationDefinition a
// system-level or fixed-type operation route implements.
func operationDefinition(r route) string {
	if r.code == "$export" {
		switch r.typ {
		case "Patient":
			return "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
		case "Group":
			return "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"
		}
		return "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
	}
	if r.code == "$stats" {
		return "http://anodyne-fhir.org/fhir/OperationDefinition/observation-stats"
	}
	if r.typ != "" {
		return "http://hl7.org/fhir/OperationDefinition/" + r.typ + "-" + strings.TrimPrefix(r.code, "$")
	}
	return "http://hl7.org/fhir/OperationDefinition/Resource-" + strings.TrimPrefix(r.code, "$")
}

// compartmentURLs names the CompartmentDefinitions that compartment search
// (GET [base]/[Compartment]/[id]/[type]) implements.
func compartmentURLs() []any {
	out := make([]any, len(compartmentTypes))
	for i, c := range compartmentTypes {
		out[i] = "http://hl7.org/fhir/CompartmentDefinition/" + strings.ToLower(c[:1]) + c[1:]
	}
	return out
}
