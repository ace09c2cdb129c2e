package fhir

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// slowReindexer is the real SQLite backend whose in-place reindexing of
// one resource takes at least delay (a slow store), counting the calls
// per resource.
type slowReindexer struct {
	storage.Backend
	inner storage.Reindexer
	delay time.Duration
	mu    sync.Mutex
	calls map[string]int
}

func (b *slowReindexer) Unwrap() storage.Backend { return b.Backend }

func (b *slowReindexer) Reindex(ctx context.Context, typ, id string, version int64, index []storage.Entry) error {
	time.Sleep(b.delay)
	b.mu.Lock()
	b.calls[typ+"/"+id]++
	b.mu.Unlock()
	return b.inner.Reindex(ctx, typ, id, version, index)
}

// syncBuf is a log sink read while the server writes to it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuf) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestReindexShortLease: the lease (150 ms) is far shorter than one page
// of 200 resources takes (at least 2 ms each), and the lease is lost
// every 120 ms (its record deleted, as when it expires in a stall). The
// reindexing still completes, every resource is reindexed exactly once
// (nothing redone after a loss) and every one is found by the new
// parameter (nothing skipped). With a checkpoint per page only, no page
// would ever complete.
func TestReindexShortLease(t *testing.T) {
	ctx := t.Context()
	inner, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	ri, ok := storage.As[storage.Reindexer](inner)
	if !ok {
		t.Fatal("sqlite has no in-place reindexing")
	}
	be := &slowReindexer{Backend: inner, inner: ri, delay: 2 * time.Millisecond, calls: map[string]int{}}
	logs := &syncBuf{}
	s, err := New(Config{BaseURL: "http://anodyne.test", Backend: be, LeaseTTL: 150 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	put := func(body string) storage.Record {
		t.Helper()
		parsed, issues := s.validator.Validate(ctx, []byte(body))
		if conformance.HasErrors(issues) {
			t.Fatalf("%s: %v", body, issues)
		}
		w, err := s.prepare(parsed.Type, parsed.ID, parsed.Resource, 0, now(), http.MethodPut)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := s.commitOne(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	const n = 450 // two full pages and a part
	for i := range n {
		put(fmt.Sprintf(`{"resourceType":"Patient","id":"p%03d","extension":[{"url":"http://example.org/fhir/StructureDefinition/site","valueCode":"s%d"}]}`, i, i%3))
	}
	put(`{"resourceType":"SearchParameter","id":"site","url":"http://example.org/fhir/SearchParameter/site","name":"Site","status":"active","description":"Site",
		"code":"site","base":["Patient"],"type":"token",
		"expression":"Patient.extension.where(url='http://example.org/fhir/StructureDefinition/site').value"}`)

	loopCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.RunSearchParameters(loopCtx, 30*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	var st spStatus
	key := spLeaseKey + "site/1"
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(120 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("reindexing did not complete: %+v", st)
		}
		raw, err := be.KV().Get(ctx, spStatusKey+"site")
		if err == nil {
			if err := json.Unmarshal(raw, &st); err != nil {
				t.Fatal(err)
			}
			if st.final() {
				break
			}
		}
		// The lease is lost: its record is gone, the holder's next
		// renewal fails.
		if err := be.KV().Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	if st.State != spStateActive || st.Done != n {
		t.Fatalf("status %+v; want active with %d done", st, n)
	}
	if lost := strings.Count(logs.String(), "lease lost"); lost < 2 {
		t.Fatalf("the lease was lost %d times; the test needs several losses mid-page", lost)
	}
	be.mu.Lock()
	for i := range n {
		if c := be.calls[fmt.Sprintf("Patient/p%03d", i)]; c != 1 {
			t.Errorf("Patient/p%03d reindexed %d times, want once", i, c)
		}
	}
	be.mu.Unlock()
	// Every patient is found by the new parameter, in its own value.
	for code, want := range map[string]int{"s0": n / 3, "s1": n / 3, "s2": n / 3} {
		filter := storage.Match{Param: "site", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: code}}
		got, cursor := 0, ""
		for {
			page, err := be.Search(ctx, storage.Query{Types: []string{"Patient"}, Filter: filter, Count: 100, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			got += len(page.Records)
			if cursor = page.Next; cursor == "" {
				break
			}
		}
		if got != want {
			t.Errorf("site=%s finds %d patients, want %d", code, got, want)
		}
	}
}
