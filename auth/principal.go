package auth

import (
	"context"
	"time"
)

// Principal is who is calling and what they were granted, as established
// from a verified access token.
type Principal struct {
	Issuer   string
	ClientID string
	Subject  string // the user (sub) or, for backend services, the client
	FHIRUser string // "Practitioner/123", "Patient/abc"; empty for backend services
	Scopes   Scopes
	// Patient and Encounter are the launch context ids (bare ids, no type prefix).
	Patient   string
	Encounter string
	Purpose   string // purpose of use, when the token carries one
	TokenID   string // jti
	ExpiresAt time.Time
	// ResearchProject, when set, makes the caller a research client of that
	// project: it reads de-identified data only and never writes.
	ResearchProject string
	// ResearchAccess is "rows" (de-identified resources, the default) or
	// "aggregates" (statistics only, never a row).
	ResearchAccess string
}

// Research access levels.
const (
	ResearchRows       = "rows"
	ResearchAggregates = "aggregates"
)

type principalKey struct{}

// WithPrincipal returns a context carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the Principal set by the middleware, or nil.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}
