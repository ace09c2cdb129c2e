package resources

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidValue is wrapped by every error about a malformed search value,
// an unknown modifier or prefix: the REST layer answers 400 for it.
var ErrInvalidValue = errors.New("resources: invalid search value")

// ErrUnknownParam is wrapped when a search parameter is not defined for the
// resource type (the REST layer decides between 400 and ignoring it, per the
// Prefer: handling header).
var ErrUnknownParam = errors.New("resources: unknown search parameter")

// ErrUnsupported is wrapped when a parameter or modifier is valid FHIR but
// not implemented here (for example :above on a token, which needs code
// system subsumption). The REST layer answers 400 or ignores it as it prefers;
// never a silent wrong answer.
var ErrUnsupported = errors.New("resources: unsupported search feature")

// ErrValueSet is wrapped by a *ValueSetError for :in and :not-in.
var ErrValueSet = errors.New("resources: value set membership must be resolved by the caller")

// ValueSetError is returned by Compile for token :in / :not-in: the caller
// expands the ValueSet (it owns terminology), then builds the expression with
// (*Registry).TokenIn.
type ValueSetError struct {
	ResourceType string
	Param        string
	Not          bool     // :not-in
	ValueSets    []string // canonical URLs, OR-ed
}

func (e *ValueSetError) Error() string {
	mod := "in"
	if e.Not {
		mod = "not-in"
	}
	return fmt.Sprintf("%s:%s=%s: %v", e.Param, mod, strings.Join(e.ValueSets, ","), ErrValueSet)
}

func (e *ValueSetError) Unwrap() error { return ErrValueSet }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalidValue)
}

// splitEscaped splits s at every sep not preceded by a backslash. Escapes are
// kept so that later splits (",", then "$", then "|") still see them; call
// unescape on the final pieces.
func splitEscaped(s string, sep byte) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // skip the escaped byte, whatever it is
		case sep:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// unescape removes the search escapes "\," "\$" "\|" and "\\". A backslash
// before any other character is kept literally; a trailing one is an error.
func unescape(s string) (string, error) {
	if strings.IndexByte(s, '\\') < 0 {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i+1 == len(s) {
			return "", invalid("value %q ends with a lone backslash", s)
		}
		switch n := s[i+1]; n {
		case ',', '$', '|', '\\':
			b.WriteByte(n)
			i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// SplitValues splits one raw parameter value into its comma-separated
// alternatives and unescapes them, for callers (chains, _has) that need the
// plain values.
func SplitValues(raw string) ([]string, error) {
	parts := splitEscaped(raw, ',')
	out := make([]string, 0, len(parts))
	for _, p := range parts {
		u, err := unescape(p)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// prefix is a search comparison prefix (search.html#prefix).
type prefix string

const (
	pfxEq prefix = "eq"
	pfxNe prefix = "ne"
	pfxGt prefix = "gt"
	pfxLt prefix = "lt"
	pfxGe prefix = "ge"
	pfxLe prefix = "le"
	pfxSa prefix = "sa"
	pfxEb prefix = "eb"
	pfxAp prefix = "ap"
)

// splitPrefix takes the optional two-letter prefix off an ordered value.
// Values of number, date and quantity never start with a letter otherwise,
// so two leading letters that are not a known prefix are an error.
func splitPrefix(v string) (prefix, string, error) {
	if len(v) >= 2 && isLower(v[0]) && isLower(v[1]) {
		switch p := prefix(v[:2]); p {
		case pfxEq, pfxNe, pfxGt, pfxLt, pfxGe, pfxLe, pfxSa, pfxEb, pfxAp:
			return p, v[2:], nil
		default:
			return "", "", invalid("unknown prefix %q in %q", v[:2], v)
		}
	}
	return pfxEq, v, nil
}

func isLower(c byte) bool { return c >= 'a' && c <= 'z' }
