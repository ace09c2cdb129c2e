package storage

import (
	"fmt"
	"slices"
	"strings"
)

// Matches evaluates e against one resource, given its logical id and its
// index entries, in memory. It is the reference meaning of the expression
// tree: backends must return exactly the resources for which Matches is
// true, and the FHIR layer uses it to check a single resource against an
// authorization filter without a round trip to the database.
//
// Chain and Has need other resources and return ErrUnsupported here.
func Matches(e Expr, id string, entries []Entry) (bool, error) {
	switch x := e.(type) {
	case nil:
		return true, nil
	case And:
		for _, sub := range x.Exprs {
			ok, err := Matches(sub, id, entries)
			if err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	case Or:
		for _, sub := range x.Exprs {
			ok, err := Matches(sub, id, entries)
			if err != nil {
				return false, err
			}
			if ok {
				return true, nil
			}
		}
		return false, nil
	case Not:
		ok, err := Matches(x.Expr, id, entries)
		return !ok && err == nil, err
	case IDs:
		for _, want := range x.IDs {
			if want == id {
				return true, nil
			}
		}
		return false, nil
	case Match:
		for i := range entries {
			en := &entries[i]
			if en.Param != x.Param || en.Kind != x.Kind {
				continue
			}
			ok, err := MatchEntry(x.Cond, en)
			if err != nil {
				return false, err
			}
			if ok {
				return true, nil
			}
		}
		return false, nil
	case Chain, Has:
		return false, fmt.Errorf("in-memory match of %s: %w", e, ErrUnsupported)
	default:
		return false, fmt.Errorf("resource-level expression %s: %w", e, ErrUnsupported)
	}
}

// MatchEntry evaluates an entry-level condition (Cmp, Part, And, Or, Not of
// them) against one index entry. A nil condition matches every entry.
func MatchEntry(cond Expr, en *Entry) (bool, error) {
	switch x := cond.(type) {
	case nil:
		return true, nil
	case And:
		for _, sub := range x.Exprs {
			ok, err := MatchEntry(sub, en)
			if err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	case Or:
		for _, sub := range x.Exprs {
			ok, err := MatchEntry(sub, en)
			if err != nil {
				return false, err
			}
			if ok {
				return true, nil
			}
		}
		return false, nil
	case Not:
		ok, err := MatchEntry(x.Expr, en)
		return !ok && err == nil, err
	case Part:
		if x.Index < 0 || x.Index >= len(en.Parts) {
			return false, nil
		}
		return MatchEntry(x.Cond, &en.Parts[x.Index])
	case Cmp:
		return compareField(x, en)
	default:
		return false, fmt.Errorf("entry-level expression %s: %w", cond, ErrUnsupported)
	}
}

func compareField(c Cmp, en *Entry) (bool, error) {
	switch c.Field {
	case FieldText, FieldExact, FieldSystem, FieldCode, FieldRefType, FieldRefID, FieldRefURL:
		want, ok := c.Value.(string)
		if !ok {
			return false, fmt.Errorf("%s: value %T is not a string: %w", c, c.Value, ErrUnsupported)
		}
		return compareString(c.Op, StringField(en, c.Field), want)
	case FieldLow, FieldHigh:
		want, ok := c.Value.(int64)
		if !ok {
			return false, fmt.Errorf("%s: value %T is not an int64: %w", c, c.Value, ErrUnsupported)
		}
		got := en.Low
		if c.Field == FieldHigh {
			got = en.High
		}
		return compareOrdered(c.Op, got, want)
	case FieldNumLow, FieldNumHigh, FieldNum:
		want, ok := c.Value.(float64)
		if !ok {
			return false, fmt.Errorf("%s: value %T is not a float64: %w", c, c.Value, ErrUnsupported)
		}
		got := en.Num
		switch c.Field {
		case FieldNumLow:
			got = en.NumLow
		case FieldNumHigh:
			got = en.NumHigh
		}
		return compareOrdered(c.Op, got, want)
	default:
		return false, fmt.Errorf("unknown field in %s: %w", c, ErrUnsupported)
	}
}

// StringField returns the value of a string field of an entry.
func StringField(en *Entry, f Field) string {
	switch f {
	case FieldText:
		return en.Text
	case FieldExact:
		return en.Exact
	case FieldSystem:
		return en.System
	case FieldCode:
		return en.Code
	case FieldRefType:
		return en.RefType
	case FieldRefID:
		return en.RefID
	case FieldRefURL:
		return en.RefURL
	}
	return ""
}

func compareString(op Op, got, want string) (bool, error) {
	switch op {
	case OpPrefix:
		return strings.HasPrefix(got, want), nil
	case OpContains:
		return strings.Contains(got, want), nil
	}
	return compareOrdered(op, got, want)
}

func compareOrdered[T int64 | float64 | string](op Op, got, want T) (bool, error) {
	switch op {
	case OpEq:
		return got == want, nil
	case OpNe:
		return got != want, nil
	case OpLt:
		return got < want, nil
	case OpLe:
		return got <= want, nil
	case OpGt:
		return got > want, nil
	case OpGe:
		return got >= want, nil
	}
	return false, fmt.Errorf("operator %s on an ordered field: %w", op, ErrUnsupported)
}

// Params lists the parameters whose entries Matches reads to evaluate e
// (sorted, without duplicates): the outer parameter of a Chain, none for
// Has and IDs, which depend on other resources or the id alone.
func Params(e Expr) []string {
	seen := map[string]bool{}
	var walk func(Expr)
	walk = func(e Expr) {
		switch x := e.(type) {
		case And:
			for _, sub := range x.Exprs {
				walk(sub)
			}
		case Or:
			for _, sub := range x.Exprs {
				walk(sub)
			}
		case Not:
			walk(x.Expr)
		case Match:
			seen[x.Param] = true
		case Chain:
			seen[x.Param] = true
		}
	}
	walk(e)
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
