package sqlite

import (
	"github.com/anodyne-fhir/anodyne/storage"
)

// driver picks the conjunct that should drive a conjunction: ids, then an
// exact reference, a chain or _has, a code, a string or uri, and last
// ranges. Without statistics SQLite cannot tell them apart; the kind of
// condition is a good proxy for its selectivity in clinical data. -1 when
// no conjunct can drive (only Or and Not).
func driver(es []storage.Expr) int {
	best, bestScore := -1, 100
	for i, e := range es {
		score := 100
		switch x := e.(type) {
		case storage.IDs:
			score = 0
		case storage.Chain, storage.Has:
			score = 3
		case storage.Match:
			switch {
			case x.Cond == nil:
				score = 6
			case x.Kind == storage.KindReference && hasEq(x.Cond, storage.FieldRefID, storage.FieldRefURL):
				score = 1
			case x.Kind == storage.KindToken && hasEq(x.Cond, storage.FieldCode):
				score = 2
			case x.Kind == storage.KindString || x.Kind == storage.KindURI:
				score = 4
			default:
				score = 5
			}
		}
		if score < bestScore {
			best, bestScore = i, score
		}
	}
	return best
}

// eqCandidates are the conjuncts that can drive by an equality lookup on
// their value index (an exact reference or a code): the ones whose
// selectivity the kind of condition cannot tell apart on skewed data (one
// patient's thousands of Observations against a code seen ten times).
func eqCandidates(es []storage.Expr) []int {
	var out []int
	for i, e := range es {
		m, ok := e.(storage.Match)
		if !ok || m.Cond == nil || m.Kind == storage.KindComposite {
			continue
		}
		if m.Kind == storage.KindReference && hasEq(m.Cond, storage.FieldRefID, storage.FieldRefURL) ||
			m.Kind == storage.KindToken && hasEq(m.Cond, storage.FieldCode) {
			out = append(out, i)
		}
	}
	return out
}

// pickDriver is the measured choice among the equality candidates: the
// one with the fewest index entries, counts[i] for cands[i] (each capped;
// a capped count is "at least the cap"). Ties keep the kind order of
// driver (fallback), so that data without skew plans as before.
func pickDriver(fallback int, cands, counts []int) int {
	best, bestN := fallback, -1
	for i, c := range cands {
		if c == fallback {
			bestN = counts[i]
		}
	}
	for i, c := range cands {
		if bestN < 0 || counts[i] < bestN {
			best, bestN = c, counts[i]
		}
	}
	return best
}

// idsDriven reports whether a filter is driven by logical ids, which only
// the (type, id) index can find: the + that steers other filters away
// from that index would turn an id lookup into a scan of every resource.
func idsDriven(e storage.Expr) bool {
	switch x := e.(type) {
	case storage.IDs:
		return true
	case storage.And:
		d := driver(x.Exprs)
		if d < 0 {
			return false
		}
		_, ok := x.Exprs[d].(storage.IDs)
		return ok
	}
	return false
}

// Walk-in-order plan (default order only). A filter that many resources
// match is cheapest answered by walking the (type, id) index from the
// cursor and checking each resource until a page is full: about
// (count+1)/density rows. The collect plan (IN list from the most
// selective conjunct, sorted afterwards) costs as many rows as that
// conjunct matches, which grows with the data set. Without statistics
// SQLite cannot tell the two apart, so Search decides itself:
//   - a capped count on the driving conjunct's value index (at most
//     walkWindow entries) says whether collecting is cheap anyway;
//   - if not, the walk examines at most walkWindow resources; a page that
//     is not full by then is completed by the collect plan from the last
//     examined resource on.
//
// Either way the wasted work is bounded by walkWindow rows, which is no
// more than what the collect plan costs when it is chosen against.
const minWalkWindow = 1000

// walkWindow is how many driver entries make a filter broad, and how many
// resources the walk examines before it gives up.
func walkWindow(limit int) int { return max(minWalkWindow, 8*limit) }

// walkDriver returns the conjunct whose value index sizes the collect
// plan, when the filter can be walked: a non-composite Match alone or
// driving an And. Ids, chains and _has are selective by nature and stay
// with the collect plan.
func walkDriver(f storage.Expr) (storage.Match, bool) {
	switch x := f.(type) {
	case storage.Match:
		return x, x.Kind != storage.KindComposite
	case storage.And:
		if d := driver(x.Exprs); d >= 0 {
			if m, ok := x.Exprs[d].(storage.Match); ok && m.Kind != storage.KindComposite {
				return m, true
			}
		}
	}
	return storage.Match{}, false
}

// planKind is how Search answers a page.
type planKind int

const (
	// planCollect finds every match from the driving conjunct's index,
	// sorts them and keeps a page.
	planCollect planKind = iota
	// planWalk steps the (type, id) index and checks each resource, at
	// most window of them; a page still short is completed by collecting.
	planWalk
	// planSortedWalk steps the date index of the one sort key in key
	// order, at most window entries; short of a page, Search collects.
	planSortedWalk
	// planRefWalk is the sorted walk over the dates of the resources that
	// refer to the driving reference's target (idx_ref_date): one
	// patient's history in date order.
	planRefWalk
)

func (k planKind) String() string {
	return [...]string{"collect", "walk", "sorted walk", "ref walk"}[k]
}

// planShape is what the chooser needs to know of a query, computed from it
// alone (shapeOf) without touching the data.
type planShape struct {
	types int // number of resource types asked for; 0 is every type
	// walkable: the filter is a plain Match or an And driven by one, not
	// by ids (walkDriver).
	walkable bool
	sortDate bool // exactly one sort key, of kind date
	sorted   bool // any sort key
	limit    int  // rows wanted: the page and one more
}

// planStats is what the chooser needs to know of the data.
type planStats struct {
	// driverEntries is the number of index entries of the driving
	// conjunct, counted exactly up to the walk window (a larger number
	// means "at least the window"); -1 when not counted.
	driverEntries int
	// ref is the driving conjunct when it is an exact local reference
	// (refOf), nil otherwise.
	ref *refKey
}

// refOf is the target of a reference Match that requires one local id.
func refOf(m storage.Match) *refKey {
	if m.Kind != storage.KindReference {
		return nil
	}
	if id, ok := eqValue(m.Cond, storage.FieldRefID); ok {
		return &refKey{param: m.Param, id: id}
	}
	return nil
}

// searchPlan is the chooser's answer.
type searchPlan struct {
	kind   planKind
	window int     // rows the walk may examine
	ref    *refKey // what a ref walk steps
}

// shapeOf computes the shape of q for a page of limit rows.
func shapeOf(q storage.Query, limit int) planShape {
	_, walkable := walkDriver(q.Filter)
	return planShape{
		types:    len(q.Types),
		walkable: walkable && !idsDriven(q.Filter),
		sortDate: len(q.Sort) == 1 && q.Sort[0].Kind == storage.KindDate,
		sorted:   len(q.Sort) > 0,
		limit:    limit,
	}
}

// needsStats reports whether choosePlan's answer for s depends on the
// statistics, so that Search counts only then.
func (s planShape) needsStats() bool {
	return s.walkable && s.types <= 1 && (!s.sorted || s.sortDate)
}

// choosePlan is the planner: a pure function of the query's shape and the
// data's statistics. A walk pays only when the driver is broad (at least
// a window of entries): collecting a narrower driver costs fewer rows than
// the window the walk may waste.
func choosePlan(s planShape, st planStats) searchPlan {
	window := walkWindow(s.limit)
	p := searchPlan{kind: planCollect, window: window}
	if !s.needsStats() {
		return p
	}
	// An exact reference driving a date sort: its resources' dates in
	// key order cost at most its entries, collecting them costs all of
	// them and a sort. A driver with no more than a page of entries is
	// collected at once (the walk would run out and collect anyway).
	if s.sortDate && st.ref != nil && st.driverEntries > s.limit {
		p.kind, p.ref = planRefWalk, st.ref
		return p
	}
	if st.driverEntries < window {
		return p
	}
	if s.sortDate {
		p.kind = planSortedWalk
	} else {
		p.kind = planWalk
	}
	return p
}
