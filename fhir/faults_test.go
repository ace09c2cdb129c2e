package fhir_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage/mongo"
	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// TestDatabaseFull: a write that does not fit is a 507 OperationOutcome
// (no-store) and changes nothing; after room is made the server takes
// writes again without a restart.
func TestDatabaseFull(t *testing.T) {
	b, err := sqlite.Open(context.Background(), t.TempDir(), sqlite.WithMaxBytes(512<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	c := newServer(t, b, nil)
	text := strings.Repeat("pain diary entry ", 400)
	var full response
	n := 0
	for ; n < 500; n++ {
		r := c.do("PUT", fmt.Sprintf("/Basic/d%d", n), fmt.Sprintf(`{"resourceType":"Basic","id":"d%d","code":{"text":%q}}`, n, text))
		if r.status != http.StatusCreated {
			full = r
			break
		}
	}
	if full.status != http.StatusInsufficientStorage {
		t.Fatalf("after %d writes: %d %s, want 507", n, full.status, full.body)
	}
	if code := get(full.json(t), "issue", 0, "code"); code != "no-store" {
		t.Errorf("issue code %v, want no-store", code)
	}
	c.do("GET", fmt.Sprintf("/Basic/d%d", n), "").expect(t, http.StatusNotFound)
	c.do("GET", fmt.Sprintf("/Basic/d%d", n-1), "").expect(t, http.StatusOK)
	if err := b.SetMaxBytes(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	c.do("PUT", fmt.Sprintf("/Basic/d%d", n), fmt.Sprintf(`{"resourceType":"Basic","id":"d%d","code":{"text":"after"}}`, n)).expect(t, http.StatusCreated)
}

// TestDatabaseOutage stops FerretDB under the server: requests get a 503
// OperationOutcome with Retry-After within the selection timeout, and the
// server answers again by itself once the database is back.
func TestDatabaseOutage(t *testing.T) {
	outage := mongotest.NewOutage(t)
	start := outage.Start
	db := start()
	b, err := mongo.Open(context.Background(), db.URI, "outage", mongo.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), mongo.WithServerSelectionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	c := newServer(t, b, nil)
	c.do("PUT", "/Patient/o1", `{"resourceType":"Patient","id":"o1"}`).expect(t, http.StatusCreated)
	if err := db.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, req := range []struct{ method, path, body string }{
		{"GET", "/Patient/o1", ""},
		{"GET", "/Patient?_id=o1", ""},
		{"PUT", "/Patient/o2", `{"resourceType":"Patient","id":"o2"}`},
	} {
		began := time.Now()
		r := c.do(req.method, req.path, req.body)
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || get(r.json(t), "issue", 0, "code") != "transient" {
			t.Errorf("%s %s during the outage: %d Retry-After %q %s; want 503, Retry-After and a transient issue", req.method, req.path, r.status, r.header.Get("Retry-After"), r.body)
		}
		if took := time.Since(began); took > 5*time.Second {
			t.Errorf("%s %s took %v during the outage", req.method, req.path, took)
		}
	}
	db = start()
	t.Cleanup(func() { db.Stop() })
	var r response
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if r = c.do("GET", "/Patient/o1", ""); r.status == http.StatusOK {
			break
		}
	}
	if r.status != http.StatusOK {
		t.Fatalf("after the database came back: %d %s", r.status, r.body)
	}
	c.do("GET", "/Patient/o2", "").expect(t, http.StatusNotFound)
	c.do("PUT", "/Patient/o2", `{"resourceType":"Patient","id":"o2"}`).expect(t, http.StatusCreated)
}
