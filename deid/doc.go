// Package deid is Anodyne's de-identifier: it turns one FHIR resource (as
// decoded JSON) into its de-identified form under an ordered rule set of
// FHIRPath rules {path, method, params}, evaluated by conformance/fhirpath. The
// first rule that selects a node decides that node and everything below
// it; what no rule selects is kept. An embedded default rule set follows
// HIPAA Safe Harbor while keeping what pain research needs (codes, numeric
// values, units, categories, status, interpretation, reference ranges,
// dosage quantities and timing).
//
// It owns the rules file format, the methods (keep, redact, dateShift,
// cryptoHash, generalize, perturb, substitute), pseudonyms (keyed HMACs of
// ids and references) and per-patient date shifts. It must not know where
// keys are stored, who the caller is, or how resources are served: the
// caller hands it a project key and receives the pseudonyms it produced.
package deid
