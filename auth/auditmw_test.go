package auth

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

// recordingSink stores events in memory, failing when fail is set, and
// notes whether the client had already received a byte of the answer
// when the record was stored.
type recordingSink struct {
	fail       atomic.Bool
	gotByte    *atomic.Bool
	events     atomic.Int32
	beforeByte atomic.Int32
}

func (s *recordingSink) RecordAudit(ctx context.Context, ev AuditEvent) error {
	if s.fail.Load() {
		return errors.New("disk full")
	}
	s.events.Add(1)
	if !s.gotByte.Load() {
		s.beforeByte.Add(1)
	}
	return nil
}

// TestAuditBeforeDisclosure: the audit record of a read is stored before
// the client receives the first byte of the answer, even for an answer
// far larger than net/http's buffer whose handler waits for the client
// to start reading (without the hold it would); and a record that cannot
// be stored turns the answer into a 503 OperationOutcome that carries
// none of the data.
func TestAuditBeforeDisclosure(t *testing.T) {
	var gotByte atomic.Bool
	sink := &recordingSink{gotByte: &gotByte}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := echo.New()
	e.Use(AuditMiddleware(sink, "http://test/fhir", "/fhir", quiet))
	secret := strings.Repeat("PATIENT-DATA ", 20_000) // 260 KB
	e.GET("/fhir/Observation", func(c echo.Context) error {
		c.Response().Header().Set("Content-Type", "application/fhir+json")
		c.Response().WriteHeader(http.StatusOK)
		if _, err := io.WriteString(c.Response(), secret); err != nil {
			return err
		}
		// Give a client that can already read the time to do so.
		deadline := time.Now().Add(time.Second)
		for !gotByte.Load() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	})
	e.GET("/fhir/Observation/big", func(c echo.Context) error {
		c.Response().WriteHeader(http.StatusOK)
		chunk := strings.Repeat("x", 64<<10)
		for range (maxHeld / len(chunk)) + 8 {
			if _, err := io.WriteString(c.Response(), chunk); err != nil {
				return err
			}
		}
		return nil
	})
	ts := httptest.NewServer(e)
	defer ts.Close()

	get := func(path string) (int, string) {
		t.Helper()
		gotByte.Store(false)
		trace := &httptrace.ClientTrace{GotFirstResponseByte: func() { gotByte.Store(true) }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, ts.URL+path, nil)
		res, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, string(body)
	}

	if st, body := get("/fhir/Observation"); st != http.StatusOK || body != secret {
		t.Fatalf("read = %d, %d bytes", st, len(body))
	}
	if sink.events.Load() != 1 || sink.beforeByte.Load() != 1 {
		t.Fatalf("%d records, %d of them before the client's first byte; want 1 and 1", sink.events.Load(), sink.beforeByte.Load())
	}
	// Beyond maxHeld the record is stored at the overflow, still first.
	if st, body := get("/fhir/Observation/big"); st != http.StatusOK || len(body) <= maxHeld {
		t.Fatalf("big read = %d, %d bytes", st, len(body))
	}
	if sink.events.Load() != 2 || sink.beforeByte.Load() != 2 {
		t.Fatalf("big read: %d records, %d before the first byte; want 2 and 2", sink.events.Load(), sink.beforeByte.Load())
	}

	sink.fail.Store(true)
	st, body := get("/fhir/Observation")
	if st != http.StatusServiceUnavailable || strings.Contains(body, "PATIENT-DATA") || !strings.Contains(body, "OperationOutcome") {
		t.Fatalf("read with the audit trail failing = %d %.200s; want 503 OperationOutcome without the data", st, body)
	}
}
