// Package auth is Anodyne's resource-server side of SMART on FHIR: it parses
// SMART v1 and v2 scopes (query-limited ones included), verifies bearer
// tokens against a list of trusted issuers (the built-in authorization
// server in auth/smart is one of them), puts the resulting Principal on the
// request context, and owns the one decision point (Policy.Decide) that the
// FHIR layer calls on every path a resource can leave by. It also defines
// the audit record the FHIR layer writes for each request that touches
// patient data.
//
// It must not know how resources are stored or served: it speaks to the
// FHIR layer only through Decision filters (storage.Expr) and to the
// resource registry only through the small Registry interface. It does not
// issue tokens; that is auth/smart's job.
package auth
