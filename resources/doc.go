// Package resources knows what each FHIR R4 resource type is for search: the
// registry of search parameters (the official R4 definitions, embedded, plus
// custom SearchParameter resources added at runtime), the compartment
// definitions, the extraction of index entries from a resource (the write
// side) and the compilation of search values into storage expressions (the
// read side).
//
// Each parameter type keeps both sides in one file (string.go, token.go,
// reference.go, date.go, number.go, quantity.go, uri.go, composite.go) so that
// what is indexed and what is asked cannot drift apart.
//
// It must not know about HTTP, Bundles, paging, authorization or any concrete
// database: it produces storage.Entry values and storage.Expr trees and leaves
// executing them to the storage backends. Chained parameters, _has, _include
// and ValueSet expansion (:in/:not-in) are resolved by the caller, which gets
// the building blocks from here.
//
// It imports storage and conformance/fhirpath only, never fhir: fhir sits
// above it and calls it (layering_test.go at the module root holds that).
package resources

//go:generate go run ./internal/gendata -src ../../shared/fhir-r4 -dst data
