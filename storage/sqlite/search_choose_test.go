package sqlite

import "testing"

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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := choosePlan(tt.shape, planStats{driverEntries: tt.entries})
			if got.kind != tt.want {
				t.Fatalf("choosePlan(%+v, %d) = %v, want %v", tt.shape, tt.entries, got.kind, tt.want)
			}
			if got.window != window {
				t.Fatalf("window %d, want %d", got.window, window)
			}
		})
	}
}
