package audit

import (
	"testing"
	"time"
)

// TestBacklogDue: the materializer stores on a pause, on age, on size and
// on a finished file, and otherwise lets reads go first.
func TestBacklogDue(t *testing.T) {
	now := time.Unix(1e9, 0)
	at := func(p position) backlog {
		return backlog{stored: position{1, 100}, end: p, lastAppend: now.Add(-time.Millisecond), oldest: now.Add(-time.Second)}
	}
	tests := []struct {
		name string
		b    backlog
		want bool
	}{
		{"nothing to store", backlog{stored: position{1, 100}, end: position{1, 100}, lastAppend: now.Add(-time.Hour), oldest: now.Add(-time.Hour)}, false},
		{"reads keep coming", at(position{1, 5000}), false},
		{"a pause", func() backlog { b := at(position{1, 5000}); b.lastAppend = now.Add(-idleGap); return b }(), true},
		{"just short of a pause", func() backlog {
			b := at(position{1, 5000})
			b.lastAppend = now.Add(-idleGap + time.Millisecond)
			return b
		}(), false},
		{"the oldest waited maxDelay", func() backlog { b := at(position{1, 5000}); b.oldest = now.Add(-maxDelay); return b }(), true},
		{"backlog at its bound", at(position{1, 100 + maxBacklog}), true},
		{"backlog just under its bound", at(position{1, 99 + maxBacklog}), false},
		{"a finished file", at(position{2, 10}), true},
	}
	for _, tc := range tests {
		if got := tc.b.due(now); got != tc.want {
			t.Errorf("%s: due %v, want %v", tc.name, got, tc.want)
		}
	}
}
