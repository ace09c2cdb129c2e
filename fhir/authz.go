package fhir

import (
	"context"
	"fmt"
	"net/http"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Actions passed to Authorizer.Decide. They follow SMART v2 scopes
// (c, r, u, d, s): history of one instance is a read, type and system
// history are searches.
const (
	ActionCreate = "create"
	ActionRead   = "read"
	ActionUpdate = "update"
	ActionDelete = "delete"
	ActionSearch = "search"
	// ActionAggregate is statistics over what the caller may search
	// ($stats): no resource is returned by it.
	ActionAggregate = "aggregate"
)

// Decision is the answer of an Authorizer. It is auth's type, not a copy:
// the decision point (auth.Policy) plugs in without an adapter, and a
// field added there cannot be silently dropped by a conversion here.
type Decision = auth.Decision

// Authorizer is the one authorization decision point the FHIR layer calls
// on every path a resource enters or leaves by (auth.Policy, or
// auth.AllowAll for a server run without authorization).
type Authorizer = auth.Authorizer

// decide asks the Authorizer; with none configured, everything is allowed.
func (s *Server) decide(ctx context.Context, action, typ string) (Decision, error) {
	if s.authz == nil {
		return Decision{Allowed: true}, nil
	}
	d, err := s.authz.Decide(ctx, action, typ)
	if err != nil {
		return Decision{}, fmt.Errorf("authorizing %s on %s: %w", action, typ, err)
	}
	if !d.Allowed {
		reason := d.Reason
		if reason == "" {
			reason = "access denied"
		}
		return Decision{}, newError(http.StatusForbidden, codeForbidden, "%s %s: %s", action, typ, reason)
	}
	return d, nil
}

// permitted reports whether one resource, given its index entries, is
// inside the decision's filter.
func permitted(d Decision, id string, entries []storage.Entry) (bool, error) {
	if d.Filter == nil {
		return true, nil
	}
	ok, err := storage.Matches(d.Filter, id, entries)
	if err != nil {
		return false, fmt.Errorf("evaluating authorization filter: %w", err)
	}
	return ok, nil
}

// checkResource authorizes action on one resource (as decoded JSON). A
// resource outside the filter is reported as 403 without revealing it.
func (s *Server) checkResource(ctx context.Context, action, typ, id string, res map[string]any) error {
	d, err := s.decide(ctx, action, typ)
	if err != nil {
		return err
	}
	return s.within(d, action, typ, id, res)
}

// within checks a decoded resource against a decision's filter.
func (s *Server) within(d Decision, action, typ, id string, res map[string]any) error {
	if d.Filter == nil {
		return nil
	}
	entries, err := s.registry.Index(typ, res)
	if err != nil {
		return fmt.Errorf("indexing %s/%s for authorization: %w", typ, id, err)
	}
	return inside(d, action, typ, id, entries)
}

// checkEntries authorizes action on a resource whose index entries are
// already extracted (a write about to be committed).
func (s *Server) checkEntries(ctx context.Context, action, typ, id string, entries []storage.Entry) error {
	d, err := s.decide(ctx, action, typ)
	if err != nil {
		return err
	}
	return inside(d, action, typ, id, entries)
}

func inside(d Decision, action, typ, id string, entries []storage.Entry) error {
	ok, err := permitted(d, id, entries)
	if err != nil {
		return err
	}
	if !ok {
		return newError(http.StatusForbidden, codeForbidden, "%s %s: the resource is outside the granted access", action, typ)
	}
	return nil
}
