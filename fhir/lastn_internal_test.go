package fhir

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
)

// TestLastNGroupingSpecTable is the grouping table of
// observation-operation-lastn.html, plus ties at the cut: each case lists
// Observations (newest first, as the backend returns them) by their
// codings, and the groups expected.
func TestLastNGroupingSpecTable(t *testing.T) {
	reg, err := resources.Load()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{registry: reg}
	type o struct {
		codes string // "a,c" (system s), or "'text'" for a text-only code
		time  string
	}
	cases := []struct {
		name string
		obs  []o
		max  int
		want string // groups of indexes into obs, "0 2|1"
	}{
		{"a b c: three groups", []o{{"a", "10:00"}, {"b", "09:00"}, {"c", "08:00"}}, 5, "0|1|2"},
		{"a b a,c: two groups", []o{{"a", "10:00"}, {"b", "09:00"}, {"a,c", "08:00"}}, 5, "0 2|1"},
		{"a b a,b: one group", []o{{"a", "10:00"}, {"b", "09:00"}, {"a,b", "08:00"}}, 5, "0 1 2"},
		{"c joins a only through the oldest", []o{{"c", "10:00"}, {"a", "09:00"}, {"b", "08:00"}, {"a,c", "07:00"}}, 5, "0 1 3|2"},
		{"text as written: three groups", []o{{"'text'", "10:00"}, {"'Text'", "09:00"}, {"'t e x t'", "08:00"}}, 5, "0|1|2"},
		{"max 1 keeps the newest", []o{{"a", "10:00"}, {"a", "09:00"}, {"b", "08:00"}}, 1, "0|2"},
		{"a tie at the cut is kept", []o{{"a", "10:00"}, {"a", "09:00"}, {"a", "09:00"}, {"a", "08:00"}}, 2, "0 1 2"},
		{"a tie at the top with max 1", []o{{"b", "10:00"}, {"b", "10:00"}, {"b", "09:00"}}, 1, "0 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var recs []storage.Record
			for i, ob := range tc.obs {
				code := map[string]any{}
				if strings.HasPrefix(ob.codes, "'") {
					code["text"] = strings.Trim(ob.codes, "'")
				} else {
					var cs []any
					for _, c := range strings.Split(ob.codes, ",") {
						cs = append(cs, map[string]any{"system": "s", "code": c})
					}
					code["coding"] = cs
				}
				raw, _ := json.Marshal(map[string]any{"resourceType": "Observation", "id": fmt.Sprint(i), "status": "final",
					"code": code, "effectiveDateTime": "2026-11-01T" + ob.time + ":00Z"})
				recs = append(recs, storage.Record{Type: "Observation", ID: fmt.Sprint(i), JSON: raw})
			}
			keys := newLastnKeys(s)
			groups, err := keys.groupInMemory(recs, tc.max)
			if err != nil {
				t.Fatal(err)
			}
			if err := keys.orderGroups(groups); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, g := range groups {
				var ids []string
				for _, r := range g {
					ids = append(ids, r.ID)
				}
				got = append(got, strings.Join(ids, " "))
			}
			if g := strings.Join(got, "|"); g != tc.want {
				t.Errorf("groups %q, want %q", g, tc.want)
			}
			if !slices.IsSortedFunc(groups, func(a, b []storage.Record) int {
				ta, _ := keys.effective(a[0])
				tb, _ := keys.effective(b[0])
				return int(tb - ta)
			}) {
				t.Errorf("groups not newest first")
			}
		})
	}
}
