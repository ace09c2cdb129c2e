package fhir

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// TestServerFaults checks that a panic or an unexpected error in a
// handler is logged with the request id and answered with a 500
// OperationOutcome that reveals nothing of the fault.
func TestServerFaults(t *testing.T) {
	b, err := sqlite.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var logs bytes.Buffer
	s, err := New(Config{BaseURL: "http://x.example", Backend: b, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.echo.GET("/fhir/test/panic", func(echo.Context) error { panic("secret-detail") }, negotiate)
	s.echo.GET("/fhir/test/fail", func(echo.Context) error { return bytes.ErrTooLarge }, negotiate)
	for _, path := range []string{"/fhir/test/panic", "/fhir/test/fail"} {
		t.Run(path, func(t *testing.T) {
			logs.Reset()
			req := httptest.NewRequest(http.MethodGet, path, nil)
			req.Header.Set("X-Request-Id", "req-42")
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			if rec.Code != http.StatusInternalServerError {
				t.Fatalf("status %d", rec.Code)
			}
			body := rec.Body.String()
			if !strings.HasPrefix(body, `{"resourceType":"OperationOutcome"`) || strings.Contains(body, "secret-detail") || strings.Contains(body, "too large") {
				t.Errorf("body %s", body)
			}
			if strings.Count(logs.String(), "request_id=req-42") != 2 || !strings.Contains(logs.String(), "status=500") {
				t.Errorf("logs lack the request id or status:\n%s", logs.String())
			}
		})
	}
}
