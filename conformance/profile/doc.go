// Package profile validates FHIR R4 resources against StructureDefinitions:
// the core definitions of every resource and data type (their invariants
// such as ele-1, dom-2..dom-6, obs-6) and profiles (the official vital-signs
// profiles, Anodyne's own under BaseURL, and any StructureDefinition a user
// adds). It owns loading definitions, generating a snapshot from a
// differential against its base, expanding ValueSets locally from the
// official valuesets.json and loaded ones, and the rules: cardinality, types
// and reference targets, fixed and pattern values, slicing, bindings and
// constraints (evaluated with conformance/fhirpath).
//
// No profile is written in Go: a profile is a StructureDefinition file under
// definitions/ or one handed to Registry.Add. The package knows nothing of
// HTTP or storage; a caller that keeps StructureDefinitions elsewhere
// (the fhir package keeps users' in the data store) plugs in a Fetcher.
package profile
