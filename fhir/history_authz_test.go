package fhir_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// historyPages follows a history's next links and returns the versions
// listed (response.location), failing on a page that has a next link but
// is not full, or on an empty page reached by one.
func historyPages(t *testing.T, c *client, path string, count int) []string {
	t.Helper()
	var got []string
	next := fmt.Sprintf("%s?_count=%d", path, count)
	for page := 0; next != ""; page++ {
		if page > 50 {
			t.Fatalf("%s: paging does not end", path)
		}
		b := c.do("GET", next, "").expect(t, http.StatusOK).json(t)
		entries := entryList(b["entry"])
		next = ""
		for _, l := range entryList(b["link"]) {
			if get(l, "relation") == "next" {
				next = get(l, "url").(string)
			}
		}
		if next != "" && len(entries) != count {
			t.Fatalf("%s page %d: %d entries and a next link, want full pages of %d", path, page, len(entries), count)
		}
		if len(entries) == 0 && page > 0 {
			t.Fatalf("%s page %d is empty: the page before it should have been the last", path, page)
		}
		for _, e := range entries {
			got = append(got, get(e, "response", "location").(string))
		}
	}
	return got
}

// TestHistoryFilteredInQuery: a patient-scoped caller pages through its
// own versions only (full pages, no trailing empty page, no next link
// after its last version), sees the deletes of what it could see, not
// others' deletes, and keeps seeing the versions of a resource that was
// moved to another patient from before the move, never after.
func TestHistoryFilteredInQuery(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			b := be.open(t)
			admin, pa := twoPatients(t, b, "patient/Patient.rs patient/Observation.rs")
			// want lists pa's versions in write order; the fixture of
			// twoPatients wrote Patient/pa/1 and Observation/o-pa/1.
			want := []string{"Observation/o-pa/_history/1"}
			own := func(loc string) { want = append(want, loc) }
			for i := range 6 {
				admin.do("PUT", fmt.Sprintf("/Observation/b%d", i), obsFor(fmt.Sprintf("b%d", i), "pb")).expect(t, http.StatusCreated)
				if i%2 == 0 {
					admin.do("PUT", fmt.Sprintf("/Observation/a%d", i), obsFor(fmt.Sprintf("a%d", i), "pa")).expect(t, http.StatusCreated)
					own(fmt.Sprintf("Observation/a%d/_history/1", i))
				}
			}
			admin.do("PUT", "/Observation/moved", obsFor("moved", "pa")).expect(t, http.StatusCreated)
			own("Observation/moved/_history/1")
			admin.do("PUT", "/Observation/moved", obsFor("moved", "pb")).expect(t, http.StatusOK) // version 2 is pb's
			admin.do("DELETE", "/Observation/moved", "").expect(t, http.StatusNoContent)          // deletes pb's version
			admin.do("DELETE", "/Observation/a2", "").expect(t, http.StatusNoContent)
			own("Observation/a2/_history/2")
			admin.do("DELETE", "/Observation/b1", "").expect(t, http.StatusNoContent)
			for i := range 3 {
				admin.do("PUT", fmt.Sprintf("/Observation/b%d", i+10), obsFor(fmt.Sprintf("b%d", i+10), "pb")).expect(t, http.StatusCreated)
			}
			slices.Reverse(want)
			for _, n := range []int{1, 2, 3, 5} {
				got := historyPages(t, pa, "/Observation/_history", n)
				if !slices.Equal(got, want) {
					t.Errorf("type history in pages of %d:\n got  %v\n want %v", n, got, want)
				}
			}
			// System history: Patient and Observation, each under its own
			// compartment rule.
			sys := slices.Clone(want)
			sys = append(sys, "Patient/pa/_history/1")
			sysGot := historyPages(t, pa, "/_history", 2)
			slices.Sort(sys)
			slices.Sort(sysGot)
			if !slices.Equal(sysGot, sys) {
				t.Errorf("system history:\n got  %v\n want %v", sysGot, sys)
			}
			// The delete of pa's a2 carries no resource but is listed.
			ih := pa.do("GET", "/Observation/a2/_history", "").expect(t, http.StatusOK).json(t)
			if es := entryList(ih["entry"]); len(es) != 2 || get(es[0], "request", "method") != "DELETE" || get(es[0], "resource") != nil {
				t.Errorf("instance history of a deleted own resource: %s", ih)
			}
			// A cursor issued to pa does not page patient pb's history, nor
			// is it accepted under another filter.
			first := pa.do("GET", "/Observation/_history?_count=1", "").expect(t, http.StatusOK).json(t)
			for _, l := range entryList(first["link"]) {
				if get(l, "relation") != "next" {
					continue
				}
				u := get(l, "url").(string)
				_, cur, _ := strings.Cut(u, "_cursor=")
				if r := admin.do("GET", "/Observation/_history?_count=1&_cursor="+cur, ""); r.status != http.StatusBadRequest {
					t.Errorf("pa's cursor replayed by an unrestricted caller: %d, want 400", r.status)
				}
			}
		})
	}
}
