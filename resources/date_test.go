package resources

import (
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

func ms(s string) int64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UnixMilli()
}

func TestDateRange(t *testing.T) {
	tests := []struct {
		in     string
		lo, hi int64
	}{
		{"2020", ms("2020-01-01T00:00:00Z"), ms("2021-01-01T00:00:00Z") - 1},
		{"2020-02", ms("2020-02-01T00:00:00Z"), ms("2020-03-01T00:00:00Z") - 1},
		{"2020-02-29", ms("2020-02-29T00:00:00Z"), ms("2020-03-01T00:00:00Z") - 1},
		{"2020-03-04T10:00", ms("2020-03-04T10:00:00Z"), ms("2020-03-04T10:01:00Z") - 1},
		{"2020-03-04T10:00:05", ms("2020-03-04T10:00:05Z"), ms("2020-03-04T10:00:06Z") - 1},
		{"2020-03-04T10:00:05.1+02:00", ms("2020-03-04T08:00:05.1Z"), ms("2020-03-04T08:00:05.2Z") - 1},
		{"2020-03-04T10:00:05.123-05:00", ms("2020-03-04T15:00:05.123Z"), ms("2020-03-04T15:00:05.123Z")},
		{"2020-03-04T10:00:05Z", ms("2020-03-04T10:00:05Z"), ms("2020-03-04T10:00:05.999Z")},
	}
	for _, tt := range tests {
		lo, hi, err := dateRange(tt.in)
		if err != nil || lo != tt.lo || hi != tt.hi {
			t.Errorf("dateRange(%q) = %d, %d, %v; want %d, %d", tt.in, lo, hi, err, tt.lo, tt.hi)
		}
	}
	for _, bad := range []string{"", "20", "2020-1", "2020-13", "2021-02-29", "2020-01-01T", "2020-01-01T25:00", "2020-01-01T10:00+2", "2020-01-01T10:00:00.", "2020-01-01T10:00:00.x", "2020-01T10:00", "abcd", "2020-01-01T10:00:00+15:00"} {
		if _, _, err := dateRange(bad); err == nil {
			t.Errorf("dateRange(%q) accepted", bad)
		}
	}
}

func TestIndexDate(t *testing.T) {
	p := param("date", storage.KindDate)
	tests := []struct {
		name   string
		n      node
		lo, hi []int64
	}{
		{"dateTime", node{"2013-01-14T10:00:00Z", "dateTime"}, []int64{ms("2013-01-14T10:00:00Z")}, []int64{ms("2013-01-14T10:00:00.999Z")}},
		{"Period", node{map[string]any{"start": "2013-01-10", "end": "2013-01-20"}, "Period"}, []int64{ms("2013-01-10T00:00:00Z")}, []int64{ms("2013-01-21T00:00:00Z") - 1}},
		{"open Period", node{map[string]any{"start": "2013-01-10"}, "Period"}, []int64{ms("2013-01-10T00:00:00Z")}, []int64{storage.MaxDate}},
		{"Timing", node{map[string]any{"event": []any{"2020-01-01", "2020-02-01"}}, "Timing"},
			[]int64{ms("2020-01-01T00:00:00Z"), ms("2020-02-01T00:00:00Z")}, []int64{ms("2020-01-02T00:00:00Z") - 1, ms("2020-02-02T00:00:00Z") - 1}},
		{"garbage", node{"yesterday", "dateTime"}, nil, nil},
		{"empty Period", node{map[string]any{}, "Period"}, nil, nil},
	}
	for _, tt := range tests {
		got := indexDate(p, tt.n)
		if len(got) != len(tt.lo) {
			t.Errorf("%s: got %+v", tt.name, got)
			continue
		}
		for i := range got {
			if got[i].Low != tt.lo[i] || got[i].High != tt.hi[i] || got[i].Kind != storage.KindDate {
				t.Errorf("%s[%d] = %+v, want [%d, %d]", tt.name, i, got[i], tt.lo[i], tt.hi[i])
			}
		}
	}
}

// TestCompileDateSemantics pins the prefix meanings of search.html.
func TestCompileDateSemantics(t *testing.T) {
	r := registry(t)
	p := param("date", storage.KindDate)
	at10 := indexDate(p, node{"2013-01-14T10:00:00Z", "dateTime"})
	day15 := indexDate(p, node{"2013-01-15", "date"})
	period := indexDate(p, node{map[string]any{"start": "2013-01-10", "end": "2013-01-20"}, "Period"})
	open := indexDate(p, node{map[string]any{"start": "2013-01-10"}, "Period"})
	tests := []struct {
		value                      string
		at10, day15, period, openP bool
	}{
		{"2013-01-14", true, false, false, false},
		{"eq2013-01", true, true, true, false},
		{"ne2013-01-14", false, true, true, true},
		{"gt2013-01-14", false, true, true, true},
		{"lt2013-01-14", false, false, true, true},
		{"ge2013-01-14", true, true, true, true},
		{"le2013-01-14", true, false, true, true},
		{"sa2013-01-14", false, true, false, false},
		{"eb2013-01-15", true, false, false, false},
		{"gt2013-01-20", false, false, false, true},
		{"2013-01-14T10:00", true, false, false, false},
		{"2013-01-14T11:00+01:00", true, false, false, false},
		{"2013-01-14T10:01", false, false, false, false},
		{"ap2013-01-14", true, true, true, true},
		{"ap2015-01-01", false, false, false, true}, // the test clock is 2024: 10% of the gap is ~344 days
	}
	for _, tt := range tests {
		e := compileOne(t, r, "Observation", "date", "", tt.value)
		for _, c := range []struct {
			name    string
			entries []storage.Entry
			want    bool
		}{{"2013-01-14T10:00Z", at10, tt.at10}, {"2013-01-15", day15, tt.day15}, {"Period 10..20", period, tt.period}, {"Period 10..", open, tt.openP}} {
			if got := matches(t, e, c.entries); got != c.want {
				t.Errorf("date=%s on %s = %v, want %v (%s)", tt.value, c.name, got, c.want, e)
			}
		}
	}
}

func TestCompileDateApproximate(t *testing.T) {
	r := registry(t)
	p := param("date", storage.KindDate)
	// 2023-06-01 is a year before the test clock: 10% is about 36 days.
	near := indexDate(p, node{"2023-06-30", "date"})
	far := indexDate(p, node{"2023-08-15", "date"})
	e := compileOne(t, r, "Observation", "date", "", "ap2023-06-01")
	if !matches(t, e, near) || matches(t, e, far) {
		t.Errorf("ap2023-06-01: near=%v far=%v (%s)", matches(t, e, near), matches(t, e, far), e)
	}
}
