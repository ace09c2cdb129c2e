package subscription

import (
	"github.com/anodyne-fhir/anodyne/storage"
)

// The candidate index: a write is checked only against the Subscriptions
// that can match it. For each Subscription, keys derives from its
// criteria (and its owner's filter) sets of index terms of which every
// matching resource must have at least one (an entry of the parameter and
// kind whose field equals the value: the Cmp Eq of storage.Matches, so
// the index never drops a match); the registry files the Subscription
// under the set shared by the fewest others, and a write looks up its own
// entries' terms. A Subscription without such a set (a bare type, a
// :not, a range alone) is checked on every write of its type.

// term is one index term a criteria requires.
type term struct {
	param string
	kind  storage.Kind
	field storage.Field
	value string
}

// slot is where terms of one parameter and kind are filed.
type slot struct {
	param string
	kind  storage.Kind
}

// keys lists alternative term sets for a resource-level expression: a
// resource matching e has an entry with a term of each set. None: no
// set is implied.
func keys(e storage.Expr) [][]term {
	switch x := e.(type) {
	case storage.And:
		var out [][]term
		for _, sub := range x.Exprs {
			out = append(out, keys(sub)...)
		}
		return out
	case storage.Or:
		set, ok := union(x.Exprs, keys)
		if !ok {
			return nil
		}
		return [][]term{set}
	case storage.Match:
		var out [][]term
		for _, cs := range condKeys(x.Cond) {
			set := make([]term, len(cs))
			for i, c := range cs {
				set[i] = term{param: x.Param, kind: x.Kind, field: c.Field, value: c.Value.(string)}
			}
			out = append(out, set)
		}
		return out
	}
	return nil
}

// condKeys is keys for an entry-level condition: sets of Cmp Eq on a
// string field, one of which an entry satisfying cond satisfies.
func condKeys(cond storage.Expr) [][]storage.Cmp {
	switch x := cond.(type) {
	case storage.Cmp:
		if _, ok := x.Value.(string); ok && x.Op == storage.OpEq {
			return [][]storage.Cmp{{x}}
		}
	case storage.And:
		var out [][]storage.Cmp
		for _, sub := range x.Exprs {
			out = append(out, condKeys(sub)...)
		}
		return out
	case storage.Or:
		set, ok := union(x.Exprs, condKeys)
		if !ok {
			return nil
		}
		return [][]storage.Cmp{set}
	}
	return nil
}

// union joins one set of each alternative; false when one has none (an
// Or branch with no required term lets anything through).
func union[T any](alts []storage.Expr, f func(storage.Expr) [][]T) ([]T, bool) {
	if len(alts) == 0 {
		return nil, false
	}
	var set []T
	for _, a := range alts {
		sets := f(a)
		if len(sets) == 0 {
			return nil, false
		}
		best := sets[0]
		for _, s := range sets[1:] {
			if len(s) < len(best) {
				best = s
			}
		}
		set = append(set, best...)
	}
	return set, true
}

// typeIndex holds the matching Subscriptions of one resource type.
type typeIndex struct {
	all   []*active // every one (heartbeats, expiry)
	scan  []*active // those without a term set: checked on every write
	terms map[slot]map[storage.Field]map[string][]*active
}

// newTypeIndex files list by the term set of each shared by the fewest.
func newTypeIndex(list []*active) *typeIndex {
	ix := &typeIndex{all: list, terms: map[slot]map[storage.Field]map[string][]*active{}}
	sets := make([][][]term, len(list))
	count := map[term]int{}
	for i, a := range list {
		if a.denied {
			continue // matches nothing
		}
		sets[i] = append(keys(a.criteria), keys(a.filter)...)
		for _, set := range sets[i] {
			for _, t := range set {
				count[t]++
			}
		}
	}
	for i, a := range list {
		if a.denied {
			continue
		}
		if len(sets[i]) == 0 {
			ix.scan = append(ix.scan, a)
			continue
		}
		best, cost := -1, 0
		for j, set := range sets[i] {
			c := 0
			for _, t := range set {
				c += count[t]
			}
			if best < 0 || c < cost {
				best, cost = j, c
			}
		}
		seen := map[term]bool{}
		for _, t := range sets[i][best] {
			if seen[t] {
				continue
			}
			seen[t] = true
			byField := ix.terms[slot{t.param, t.kind}]
			if byField == nil {
				byField = map[storage.Field]map[string][]*active{}
				ix.terms[slot{t.param, t.kind}] = byField
			}
			byValue := byField[t.field]
			if byValue == nil {
				byValue = map[string][]*active{}
				byField[t.field] = byValue
			}
			byValue[t.value] = append(byValue[t.value], a)
		}
	}
	return ix
}

// candidates are the Subscriptions a version with entries may match,
// each once.
func (ix *typeIndex) candidates(entries []storage.Entry) []*active {
	if ix == nil {
		return nil
	}
	out := ix.scan
	var seen map[*active]bool
	copied := false
	for i := range entries {
		en := &entries[i]
		for f, byValue := range ix.terms[slot{en.Param, en.Kind}] {
			for _, a := range byValue[storage.StringField(en, f)] {
				if seen == nil {
					seen = map[*active]bool{}
				}
				if seen[a] {
					continue
				}
				seen[a] = true
				if !copied {
					out = append([]*active(nil), out...)
					copied = true
				}
				out = append(out, a)
			}
		}
	}
	return out
}
