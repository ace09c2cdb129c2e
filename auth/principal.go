package auth

import (
	"context"
	"fmt"
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

// ValidResearchProject checks a research project name: it keys the
// project's pseudonym key and records in the store, so it is a plain
// name of 1 to 64 letters, digits, '.', '_' or '-', starting with a letter
// or digit.
func ValidResearchProject(p string) error {
	ok := p != "" && len(p) <= 64
	for i, r := range p {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || (r != '.' && r != '_' && r != '-')) {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("research project %q must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", p)
	}
	return nil
}
