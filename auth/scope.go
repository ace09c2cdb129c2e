package auth

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Context is the first segment of a resource scope: whose data the scope opens.
type Context string

// The three SMART scope contexts.
const (
	ContextPatient Context = "patient"
	ContextUser    Context = "user"
	ContextSystem  Context = "system"
)

// Permission letters in the canonical SMART v2 order. A v2 scope must list
// its letters in this order; anything else is rejected rather than guessed.
const letterOrder = "cruds"

// Scope is one parsed resource scope (patient/Observation.rs?category=...).
// Non-resource scopes (openid, launch, offline_access...) are not Scopes;
// ParseScopes returns them as plain strings.
type Scope struct {
	Raw     string  // exactly as granted, so v1 requests are answered with v1 scopes
	Context Context // patient, user or system
	Type    string  // resource type or "*"
	// Letters is the set of granted interactions in canonical order, a
	// subset of "cruds"; v1 .read/.write/.* are expanded into it.
	Letters string
	// Query is the query of a query-limited v2 scope, in its original
	// encoding-free form (values keep their "|"). Nil when unrestricted.
	Query url.Values
	V1    bool
}

// ErrMalformedScope reports a resource scope that does not follow the SMART grammar.
var ErrMalformedScope = errors.New("auth: malformed scope")

// Allows reports whether the scope grants the interaction letter on the type.
func (s Scope) Allows(letter byte, resourceType string) bool {
	if s.Type != "*" && s.Type != resourceType {
		return false
	}
	return strings.IndexByte(s.Letters, letter) >= 0
}

// Covers reports whether granting s also grants o: same context, a type at
// least as wide, a superset of letters and a query no narrower. It decides
// which requested scopes a client may receive from its registered ones.
func (s Scope) Covers(o Scope) bool {
	if s.Context != o.Context || (s.Type != "*" && s.Type != o.Type) {
		return false
	}
	for i := 0; i < len(o.Letters); i++ {
		if strings.IndexByte(s.Letters, o.Letters[i]) < 0 {
			return false
		}
	}
	if len(s.Query) == 0 {
		return true
	}
	return s.Query.Encode() == o.Query.Encode()
}

// ParseScope parses one resource scope in v1 or v2 syntax. It returns
// ErrMalformedScope for anything that is not a resource scope or that does
// not follow the grammar exactly (unknown suffixes, out-of-order or repeated
// letters, a query on a v1 scope, an empty query).
func ParseScope(raw string) (Scope, error) {
	ctx, rest, ok := strings.Cut(raw, "/")
	if !ok {
		return Scope{}, fmt.Errorf("%w: %q has no context", ErrMalformedScope, raw)
	}
	s := Scope{Raw: raw, Context: Context(ctx)}
	switch s.Context {
	case ContextPatient, ContextUser, ContextSystem:
	default:
		return Scope{}, fmt.Errorf("%w: %q: unknown context %q", ErrMalformedScope, raw, ctx)
	}
	typ, perm, ok := strings.Cut(rest, ".")
	if !ok {
		return Scope{}, fmt.Errorf("%w: %q has no permissions", ErrMalformedScope, raw)
	}
	if !validType(typ) {
		return Scope{}, fmt.Errorf("%w: %q: bad resource type %q", ErrMalformedScope, raw, typ)
	}
	s.Type = typ
	perm, query, hasQuery := strings.Cut(perm, "?")
	switch perm {
	case "read":
		s.Letters, s.V1 = "rs", true
	case "write":
		s.Letters, s.V1 = "cud", true
	case "*":
		s.Letters, s.V1 = "cruds", true
	default:
		if err := checkLetters(perm); err != nil {
			return Scope{}, fmt.Errorf("%w: %q: %v", ErrMalformedScope, raw, err)
		}
		s.Letters = perm
	}
	if hasQuery {
		if s.V1 {
			return Scope{}, fmt.Errorf("%w: %q: a v1 scope cannot carry a query", ErrMalformedScope, raw)
		}
		q, err := parseScopeQuery(query)
		if err != nil {
			return Scope{}, fmt.Errorf("%w: %q: %v", ErrMalformedScope, raw, err)
		}
		s.Query = q
	}
	return s, nil
}

func checkLetters(perm string) error {
	if perm == "" {
		return errors.New("no permission letters")
	}
	last := -1
	for i := 0; i < len(perm); i++ {
		pos := strings.IndexByte(letterOrder, perm[i])
		if pos < 0 {
			return fmt.Errorf("unknown permission %q", perm)
		}
		if pos <= last {
			return fmt.Errorf("permission letters %q out of order or repeated", perm)
		}
		last = pos
	}
	return nil
}

// parseScopeQuery splits the query of a query-limited scope. It splits on
// "&" and "=" by hand and percent-decodes each part once, so that a "|"
// (literal or %7C) survives and a "+" is not turned into a space.
func parseScopeQuery(q string) (url.Values, error) {
	if q == "" {
		return nil, errors.New("empty query")
	}
	out := url.Values{}
	for _, pair := range strings.Split(q, "&") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("bad query parameter %q", pair)
		}
		dk, err := url.PathUnescape(k)
		if err != nil {
			return nil, fmt.Errorf("bad query parameter %q: %w", pair, err)
		}
		dv, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("bad query value %q: %w", pair, err)
		}
		out.Add(dk, dv)
	}
	return out, nil
}

func validType(t string) bool {
	if t == "*" {
		return true
	}
	if t == "" || t[0] < 'A' || t[0] > 'Z' {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Scopes is a parsed scope string: the resource scopes that follow the
// grammar, the other well-formed scopes (openid, launch/patient...), and
// the malformed resource-looking ones, which grant nothing.
type Scopes struct {
	Resource  []Scope
	Other     []string
	Malformed []string
}

// ParseScopes parses a space-separated scope string. Anything containing
// "/" and a "." after it is treated as a resource scope; when malformed it
// lands in Malformed and grants nothing (never reinterpreted). Launch scopes
// such as "launch/patient" are in Other.
func ParseScopes(s string) Scopes {
	var out Scopes
	for _, f := range strings.Fields(s) {
		if isResourceShaped(f) {
			sc, err := ParseScope(f)
			if err != nil {
				out.Malformed = append(out.Malformed, f)
				continue
			}
			out.Resource = append(out.Resource, sc)
			continue
		}
		out.Other = append(out.Other, f)
	}
	return out
}

func isResourceShaped(f string) bool {
	ctx, rest, ok := strings.Cut(f, "/")
	if !ok {
		return false
	}
	switch ctx {
	case "patient", "user", "system":
		return true
	}
	return strings.Contains(rest, ".")
}

// Has reports whether a non-resource scope (openid, offline_access...) is present.
func (s Scopes) Has(name string) bool {
	for _, o := range s.Other {
		if o == name {
			return true
		}
	}
	return false
}

// String gives the granted scopes back in their original spelling.
func (s Scopes) String() string {
	parts := make([]string, 0, len(s.Other)+len(s.Resource))
	parts = append(parts, s.Other...)
	for _, r := range s.Resource {
		parts = append(parts, r.Raw)
	}
	return strings.Join(parts, " ")
}
