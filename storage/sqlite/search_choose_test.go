package sqlite

import (
	"fmt"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

// TestChoosePlan pins the chooser as a pure function of shape and
// statistics: a walk only when the driver is at least a window broad, and
// never for shapes the walk cannot answer (several types, a non-date sort,
// an id-driven or non-walkable filter).
func TestChoosePlan(t *testing.T) {
	const limit = 21
	window := walkWindow(limit)
	walkable := planShape{types: 1, walkable: true, limit: limit}
	byDate := planShape{types: 1, walkable: true, sorted: true, sortDate: true, limit: limit}
	tests := []struct {
		name    string
		shape   planShape
		entries int
		want    planKind
	}{
		{"broad driver walks", walkable, window, planWalk},
		{"narrow driver collects", walkable, window - 1, planCollect},
		{"broad driver by date walks the date index", byDate, window + 5, planSortedWalk},
		{"narrow driver by date collects", byDate, 3, planCollect},
		{"non-date sort collects", planShape{types: 1, walkable: true, sorted: true, limit: limit}, window * 10, planCollect},
		{"several types collect", planShape{types: 2, walkable: true, limit: limit}, window * 10, planCollect},
		{"unwalkable filter collects", planShape{types: 1, limit: limit}, window * 10, planCollect},
		{"uncounted collects", walkable, -1, planCollect},
		{"a reference driving a date sort walks its dates", byDate, 50, planRefWalk},
		{"a broad reference driving a date sort walks its dates", byDate, window * 10, planRefWalk},
		{"a reference with a page of entries collects", byDate, limit, planCollect},
		{"a reference without a date sort walks the type", walkable, window, planWalk},
	}
	ref := &refKey{param: "patient", id: "p1"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := planStats{driverEntries: tt.entries}
			if strings.Contains(tt.name, "reference") {
				st.ref = ref
			}
			got := choosePlan(tt.shape, st)
			if (got.kind == planRefWalk) != (got.ref == ref) {
				t.Fatalf("plan %v with ref %v", got.kind, got.ref)
			}
			if got.kind != tt.want {
				t.Fatalf("choosePlan(%+v, %d) = %v, want %v", tt.shape, tt.entries, got.kind, tt.want)
			}
			if got.window != window {
				t.Fatalf("window %d, want %d", got.window, window)
			}
		})
	}
}

// TestPickDriver pins the measured choice: the fewest entries wins, a tie
// (including two capped counts) keeps the kind-order driver.
func TestPickDriver(t *testing.T) {
	tests := []struct {
		name     string
		fallback int
		cands    []int
		counts   []int
		want     int
	}{
		{"fewer entries win", 0, []int{0, 2}, []int{1000, 12}, 2},
		{"fallback fewer", 0, []int{0, 2}, []int{30, 400}, 0},
		{"tie keeps the fallback", 2, []int{0, 2}, []int{30, 30}, 2},
		{"both capped keep the fallback", 1, []int{1, 3}, []int{1000, 1000}, 1},
		{"three: the smallest", 0, []int{0, 1, 3}, []int{500, 9, 8}, 3},
		{"empty conjunct wins", 1, []int{0, 1}, []int{0, 5}, 0},
	}
	for _, tt := range tests {
		if got := pickDriver(tt.fallback, tt.cands, tt.counts); got != tt.want {
			t.Errorf("%s: pickDriver(%d, %v, %v) = %d, want %d", tt.name, tt.fallback, tt.cands, tt.counts, got, tt.want)
		}
	}
}

func TestEqCandidates(t *testing.T) {
	ref := skewRef("patient", "p1")
	code := skewCode("1234-5")
	rng := storage.Match{Param: "value-quantity", Kind: storage.KindQuantity, Cond: storage.Cmp{Field: storage.FieldNum, Op: storage.OpGt, Value: 1.0}}
	prefix := storage.Match{Param: "name", Kind: storage.KindString, Cond: storage.Cmp{Field: storage.FieldText, Op: storage.OpEq, Value: "x"}}
	system := storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldSystem, Op: storage.OpEq, Value: "http://loinc.org"}}
	got := eqCandidates([]storage.Expr{rng, ref, prefix, code, system, storage.Not{Expr: code}, storage.IDs{IDs: []string{"a"}}})
	if fmt.Sprint(got) != "[1 3]" {
		t.Errorf("eqCandidates = %v, want [1 3] (the reference and the code)", got)
	}
}
