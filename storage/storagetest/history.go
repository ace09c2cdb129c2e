package storagetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// historyFixture writes an interleaved history of two types and returns
// every version written, in commit order.
func historyFixture(e *env) []storage.Record {
	var out []storage.Record
	out = append(out, e.put("Patient", "a"))     // Patient/a/1
	out = append(out, e.put("Observation", "x")) // Observation/x/1
	out = append(out, e.put("Patient", "b"))     // Patient/b/1
	out = append(out, e.put("Patient", "a"))     // Patient/a/2
	out = append(out, e.del("Observation", "x")) // Observation/x/2
	out = append(out, e.del("Patient", "a"))     // Patient/a/3
	out = append(out, e.put("Patient", "a"))     // Patient/a/4
	return out
}

func newestFirst(rs []storage.Record, keep func(storage.Record) bool) []string {
	var out []storage.Record
	for _, r := range rs {
		if keep(r) {
			out = append(out, r)
		}
	}
	slices.Reverse(out)
	return versions(out)
}

var historyCases = []testCase{
	{"InstanceTypeSystem", func(t *testing.T, e *env) {
		all := historyFixture(e)
		wantList(t, versions(e.history(storage.HistoryRequest{Type: "Patient", ID: "a"})),
			[]string{"Patient/a/4", "Patient/a/3", "Patient/a/2", "Patient/a/1"}, "instance history")
		wantList(t, versions(e.history(storage.HistoryRequest{Type: "Patient"})),
			newestFirst(all, func(r storage.Record) bool { return r.Type == "Patient" }), "type history")
		sys := e.history(storage.HistoryRequest{})
		wantList(t, versions(sys), newestFirst(all, func(storage.Record) bool { return true }), "system history")
		for i := 1; i < len(sys); i++ {
			if sys[i].Seq >= sys[i-1].Seq {
				t.Fatalf("system history not newest first by Seq: %d then %d", sys[i-1].Seq, sys[i].Seq)
			}
		}
		for _, r := range sys {
			if r.Deleted != (len(r.JSON) == 0) {
				t.Fatalf("%s/%s/%d: Deleted=%v with %d bytes of JSON", r.Type, r.ID, r.VersionID, r.Deleted, len(r.JSON))
			}
			if r.Deleted && r.Method != "DELETE" {
				t.Fatalf("deleted version with Method %q", r.Method)
			}
		}
		wantList(t, versions(e.history(storage.HistoryRequest{Type: "Patient", ID: "zzz"})), []string{}, "history of unknown id")
	}},
	{"SinceBefore", func(t *testing.T, e *env) {
		all := historyFixture(e)
		cut := all[3].LastUpdated // Patient/a/2
		wantList(t, versions(e.history(storage.HistoryRequest{Since: cut})),
			newestFirst(all, func(r storage.Record) bool { return !r.LastUpdated.Before(cut) }), "Since (inclusive)")
		wantList(t, versions(e.history(storage.HistoryRequest{Before: cut})),
			newestFirst(all, func(r storage.Record) bool { return r.LastUpdated.Before(cut) }), "Before (exclusive)")
		end := all[5].LastUpdated
		wantList(t, versions(e.history(storage.HistoryRequest{Type: "Patient", Since: cut, Before: end})),
			[]string{"Patient/a/2"}, "Since and Before on type history")
		wantList(t, versions(e.history(storage.HistoryRequest{Type: "Patient", ID: "a", Since: end})),
			[]string{"Patient/a/4", "Patient/a/3"}, "Since on instance history")
	}},
	{"At", func(t *testing.T, e *env) {
		all := historyFixture(e)
		// Just after Patient/a/2 was written: a is at 2, b at 1, x at 1.
		at := all[3].LastUpdated.Add(500 * time.Millisecond)
		wantList(t, versions(e.history(storage.HistoryRequest{At: at})),
			[]string{"Patient/a/2", "Patient/b/1", "Observation/x/1"}, "system history At")
		wantList(t, versions(e.history(storage.HistoryRequest{Type: "Patient", At: at})),
			[]string{"Patient/a/2", "Patient/b/1"}, "type history At")
		wantList(t, versions(e.history(storage.HistoryRequest{Type: "Patient", ID: "a", At: all[0].LastUpdated})),
			[]string{"Patient/a/1"}, "instance history At the exact instant of a write")
		wantList(t, versions(e.history(storage.HistoryRequest{At: all[0].LastUpdated.Add(-time.Second)})),
			[]string{}, "At before anything existed")
	}},
	{"PagingWithConcurrentWrites", func(t *testing.T, e *env) {
		var want []string
		for i := range 12 {
			want = append(want, versions([]storage.Record{e.put("Patient", fmt.Sprintf("p%d", i%5))})...)
		}
		slices.Reverse(want)
		req := storage.HistoryRequest{Count: 5}
		var got []string
		for page := 0; ; page++ {
			if page > 20 {
				t.Fatal("history paging does not end")
			}
			p, err := e.b.History(e.ctx, req)
			if err != nil {
				t.Fatalf("History page %d: %v", page, err)
			}
			if len(p.Records) > 5 {
				t.Fatalf("page of %d records for Count=5", len(p.Records))
			}
			got = append(got, versions(p.Records)...)
			if p.Next == "" {
				break
			}
			// Writes between pages must neither repeat nor hide older versions.
			e.put("Patient", fmt.Sprintf("p%d", page))
			e.put("Patient", fmt.Sprintf("new%d", page))
			req.Cursor = p.Next
		}
		wantList(t, got, want, "paged history with writes in between")
	}},
	{"BadCursor", func(t *testing.T, e *env) {
		e.put("Patient", "a")
		for _, c := range []string{"garbage", "!!!", "eyJ4IjoxfQ"} {
			_, err := e.b.History(e.ctx, storage.HistoryRequest{Cursor: c})
			wantErr(t, err, storage.ErrBadCursor, fmt.Sprintf("History cursor %q", c))
		}
	}},
}
