// Package conformance owns Anodyne's embedded FHIR R4 definitions and the
// validation of incoming resources against them.
//
// It embeds the official R4 JSON schema and knows the list of R4 resource
// types. A Validator checks a request body in three passes, each run once
// per body: a strict pass over the JSON (duplicate keys, null, empty
// values, nesting depth, trailing data) that also decodes the body, the JSON
// schema compiled per resource type and dispatched on resourceType (nested
// resources included), and google/fhir/go's validating unmarshaller for
// primitive formats, required elements, cardinality and reference targets.
//
// The first two passes have fast paths that never change an outcome: a
// hand-written scanner decodes well-formed bodies and hands anything else to
// the token-based reference decoder, and a sound walk of the schema accepts
// the resources it is certain of, leaving jsonschema to explain the rest.
// Differential tests and fuzz targets hold each fast path to its reference.
// Every finding becomes an Issue with a FHIR issue-type code and a
// FHIRPath-style expression that the REST layer turns into an
// OperationOutcome.
//
// It must not know about HTTP, storage, search parameters, authorization or
// business rules (a pain score of 15 is structurally valid here): those
// belong to the fhir, storage, resources and auth packages.
package conformance
