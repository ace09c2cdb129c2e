package fhir

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"testing"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// TestServerParamReindex: Flags stored by a release without the
// server-defined Flag status parameter (written here without its index
// entries) are found by Flag?status= once the search-parameter loop ran
// its reindex for the shipped version, which it records as done and
// does not repeat.
func TestServerParamReindex(t *testing.T) {
	ctx := t.Context()
	be, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	s, err := New(Config{BaseURL: "http://anodyne.test", Backend: be, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old := func(id, status string) {
		t.Helper()
		parsed, issues := s.validator.Validate(ctx, []byte(`{"resourceType":"Flag","id":"`+id+`","status":"`+status+`","code":{"text":"x"},"subject":{"reference":"Patient/p"}}`))
		if conformance.HasErrors(issues) {
			t.Fatal(issues)
		}
		w, err := s.prepare("Flag", id, parsed.Resource, 0, now(), http.MethodPut)
		if err != nil {
			t.Fatal(err)
		}
		n := len(w.Index)
		w.Index = slices.DeleteFunc(w.Index, func(e storage.Entry) bool { return e.Param == "status" })
		if len(w.Index) != n-1 {
			t.Fatalf("the Flag had %d status entries, want 1", n-len(w.Index))
		}
		if _, err := s.commitOne(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	old("a1", "active")
	old("a2", "active")
	old("i1", "inactive")
	active := func() []string {
		t.Helper()
		q, err := s.registry.Compile("Flag", "status", "", []string{"active"})
		if err != nil {
			t.Fatal(err)
		}
		page, err := be.Search(ctx, storage.Query{Types: []string{"Flag"}, Filter: q, Count: 10})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range page.Records {
			ids = append(ids, r.ID)
		}
		return ids
	}
	if got := active(); len(got) != 0 {
		t.Fatalf("before the reindex status=active finds %v", got)
	}
	registered, settled := map[string]int64{}, map[string]int64{}
	if err := s.syncSearchParameters(ctx, registered, settled); err != nil {
		t.Fatal(err)
	}
	if got := active(); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Fatalf("after the reindex status=active finds %v, want a1 a2", got)
	}
	raw, err := be.KV().Get(ctx, spStatusKey+"server:Flag-status")
	if err != nil {
		t.Fatal(err)
	}
	var st spStatus
	if err := json.Unmarshal(raw, &st); err != nil || st.State != spStateActive || st.Version != 1 || st.Done != 3 {
		t.Fatalf("status %s (%v)", raw, err)
	}
	// Another process (fresh maps) finds it done and reindexes nothing.
	old("a3", "active")
	if err := s.syncSearchParameters(ctx, map[string]int64{}, map[string]int64{}); err != nil {
		t.Fatal(err)
	}
	if got := active(); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Errorf("a settled version was reindexed again: %v", got)
	}
}
