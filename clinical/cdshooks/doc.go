// Package cdshooks is Anodyne's CDS Hooks 1.0/2.0 service: discovery at
// /cds-services and the opioid-mme service for the order-select and
// order-sign hooks, which answers with cards showing the patient's
// projected morphine milligram equivalents per day (MME/day) with the
// draft orders, and the opioid + benzodiazepine overlap, with suggestions
// (lower the draft below the threshold it crosses, co-prescribe naloxone:
// suggest.go) and the feedback endpoint (each item an AuditEvent written
// through the FHIR server's commit path: feedback.go).
//
// It owns the CDS Hooks protocol: the request and card shapes, the
// authentication of CDS clients (a JWT each client signs, checked against
// the client's configured JWKS), prefetch, and fetching what the client
// did not prefetch (over HTTP from the hook's fhirServer with the hook's
// fhirAuthorization token, checked against context.patientId and, for this
// server, verified up front: fhirauth.go; or, when fhirServer is this server, through
// fhir.PatientReader with the caller that token names, so the one
// authorization decision still applies). The MME arithmetic and
// thresholds belong to clinical/opioid. It must not know storage
// backends or scopes, and neither fhir nor clinical/opioid imports it.
package cdshooks
