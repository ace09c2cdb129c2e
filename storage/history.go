package storage

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// HistoryClause is one alternative of a filtered history request: a
// version is selected when it is of Type (empty: any type) and its own
// entries match Filter (nil: any version).
type HistoryClause struct {
	Type   string
	Filter Expr
}

// Clauses returns the alternatives of r in a stable order (TypeFilters by
// type, each ANDed with Filter), one of which a version must satisfy. It
// refuses what no backend can answer exactly: TypeFilters with Type, and
// Chain or Has anywhere in a filter.
func (r HistoryRequest) Clauses() ([]HistoryClause, error) {
	if r.TypeFilters == nil {
		if err := historyFilterOK(r.Filter); err != nil {
			return nil, err
		}
		return []HistoryClause{{Type: r.Type, Filter: r.Filter}}, nil
	}
	if r.Type != "" {
		return nil, errors.New("history: TypeFilters is for system history only")
	}
	types := make([]string, 0, len(r.TypeFilters))
	for t := range r.TypeFilters {
		types = append(types, t)
	}
	slices.Sort(types)
	out := make([]HistoryClause, 0, len(types))
	for _, t := range types {
		if t == "" {
			return nil, errors.New("history: TypeFilters has an empty type")
		}
		f := r.TypeFilters[t]
		switch {
		case r.Filter == nil:
		case f == nil:
			f = r.Filter
		default:
			f = And{Exprs: []Expr{r.Filter, f}}
		}
		if err := historyFilterOK(f); err != nil {
			return nil, err
		}
		out = append(out, HistoryClause{Type: t, Filter: f})
	}
	return out, nil
}

// HistoryKey is a canonical text of the clauses, for binding a paging
// cursor to the filter it was issued for.
func HistoryKey(cs []HistoryClause) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString(c.Type)
		b.WriteByte(0)
		b.WriteString(str(c.Filter))
		b.WriteByte(0)
	}
	return b.String()
}

// historyFilterOK refuses Chain and Has, which would judge an old version
// by the current state of other resources.
func historyFilterOK(e Expr) error {
	switch x := e.(type) {
	case nil, Match, IDs:
		return nil
	case And:
		return historyListOK(x.Exprs)
	case Or:
		return historyListOK(x.Exprs)
	case Not:
		if x.Expr == nil {
			return fmt.Errorf("history filter: Not without an expression: %w", ErrUnsupported)
		}
		return historyFilterOK(x.Expr)
	default:
		return fmt.Errorf("history filter %s: %w", e, ErrUnsupported)
	}
}

func historyListOK(es []Expr) error {
	for _, e := range es {
		if err := historyFilterOK(e); err != nil {
			return err
		}
	}
	return nil
}

// MatchesVersion is Matches for a history version: entries nil (a version
// stored without entries) never matches a filter.
func MatchesVersion(c HistoryClause, typ, id string, entries []Entry) (bool, error) {
	if c.Type != "" && c.Type != typ {
		return false, nil
	}
	if c.Filter == nil {
		return true, nil
	}
	if entries == nil {
		return false, nil
	}
	return Matches(c.Filter, id, entries)
}
