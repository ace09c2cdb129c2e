package fhir

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// benchObservation is a typical vital-sign Observation (about 1 KB).
const benchObservation = `{"resourceType":"Observation","status":"final",
"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs","display":"Vital Signs"}]}],
"code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}],"text":"Heart rate"},
"subject":{"reference":"Patient/bench-patient"},"encounter":{"reference":"Encounter/bench-encounter"},
"effectiveDateTime":"2024-03-01T10:00:00+01:00","issued":"2024-03-01T10:05:00.000+01:00",
"performer":[{"reference":"Practitioner/bench-practitioner"}],
"valueQuantity":{"value":72.50,"unit":"beats/minute","system":"http://unitsofmeasure.org","code":"/min"},
"interpretation":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation","code":"N"}]}],
"referenceRange":[{"low":{"value":60,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"},"high":{"value":100,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}]}`

// benchServer starts the real server on SQLite and mounts, next to the
// real routes, the same handler chains without their storage call:
//   - POST /fhir/nostore/:type runs create minus Commit (negotiation, body
//     cap, validation, meta, index extraction, encoding, Prefer, headers);
//   - GET /fhir/nostore/:type/:id runs read minus backend.Read, serving a
//     record kept in memory (decision, conditional headers, encoding).
//
// Both go through the same middleware and the same HTTP client, so the
// ratio real/nostore isolates what storage costs.
func benchServer(b *testing.B, dir string) (*Server, *httptest.Server, storage.Backend) {
	b.Helper()
	ctx := context.Background()
	be, err := sqlite.Open(ctx, dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	s, err := New(Config{BaseURL: "http://bench.example", Backend: be, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	var kept storage.Record
	s.echo.POST("/fhir/nostore/:type", func(c echo.Context) error {
		typ, err := resourceType(c)
		if err != nil {
			return err
		}
		body, err := s.readBody(c, mimeFHIRJSON, mimeJSON)
		if err != nil {
			return err
		}
		ctx := c.Request().Context()
		parsed, err := s.parseResource(ctx, typ, body)
		if err != nil {
			return err
		}
		id := randomID()
		w, err := s.prepare(typ, id, parsed.Resource, 0, now(), http.MethodPost)
		if err != nil {
			return err
		}
		if err := s.checkEntries(ctx, ActionCreate, typ, id, w.Index); err != nil {
			return err
		}
		kept = w.Record
		return s.respondWrite(c, http.StatusCreated, w.Record, "created")
	}, negotiate)
	s.echo.GET("/fhir/nostore/:type/:id", func(c echo.Context) error {
		typ, err := resourceType(c)
		if err != nil {
			return err
		}
		if _, err := pathID(c, http.StatusNotFound); err != nil {
			return err
		}
		d, err := s.decide(c.Request().Context(), ActionRead, typ)
		if err != nil {
			return err
		}
		return s.serveRecord(c, d, nil, kept)
	}, negotiate)
	ts := httptest.NewServer(s.Handler())
	b.Cleanup(ts.Close)
	return s, ts, be
}

func post(b *testing.B, hc *http.Client, url, body string) string {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", mimeFHIRJSON)
	res, err := hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		b.Fatalf("POST %s: %d", url, res.StatusCode)
	}
	return res.Header.Get("Location")
}

func getOK(b *testing.B, hc *http.Client, url string) {
	res, err := hc.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %d", url, res.StatusCode)
	}
}

// BenchmarkCreate: POST of a typical Observation through the full HTTP
// stack, on SQLite (store) and without the Commit (nostore).
func BenchmarkCreate(b *testing.B) {
	_, ts, _ := benchServer(b, b.TempDir())
	hc := ts.Client()
	for _, path := range []string{"/fhir/Observation", "/fhir/nostore/Observation"} {
		name := map[bool]string{true: "store", false: "nostore"}[!strings.Contains(path, "nostore")]
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				post(b, hc, ts.URL+path, benchObservation)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// BenchmarkRead: GET of that Observation, from SQLite (store) and from
// memory (nostore).
func BenchmarkRead(b *testing.B) {
	_, ts, _ := benchServer(b, b.TempDir())
	hc := ts.Client()
	loc := post(b, hc, ts.URL+"/fhir/Observation", benchObservation)
	post(b, hc, ts.URL+"/fhir/nostore/Observation", benchObservation)
	id := strings.Split(strings.TrimPrefix(loc, "http://bench.example/fhir/Observation/"), "/")[0]
	for _, path := range []string{"/fhir/Observation/" + id, "/fhir/nostore/Observation/" + id} {
		name := map[bool]string{true: "store", false: "nostore"}[!strings.Contains(path, "nostore")]
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				getOK(b, hc, ts.URL+path)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// BenchmarkReadAt100k: HTTP read latency with 100,000 Observations stored.
// The store is loaded through storage directly in batches of 1,000 (with
// their real index entries); set ANODYNE_BENCH_N to change the size.
func BenchmarkReadAt100k(b *testing.B) {
	n := 100_000
	if v := os.Getenv("ANODYNE_BENCH_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("ANODYNE_BENCH_N=%q", v)
		}
	}
	s, ts, be := benchServer(b, b.TempDir())
	ctx := context.Background()
	start := time.Now()
	parsed, issues := s.validator.Validate(ctx, []byte(benchObservation))
	if len(issues) > 0 && parsed.Resource == nil {
		b.Fatalf("bench resource invalid: %v", issues)
	}
	const batch = 1000
	writes := make([]storage.Write, 0, batch)
	for i := 0; i < n; i++ {
		res := map[string]any{}
		for k, v := range parsed.Resource {
			res[k] = v
		}
		res["subject"] = map[string]any{"reference": fmt.Sprintf("Patient/p%d", i%5000)}
		w, err := s.prepare("Observation", fmt.Sprintf("o%d", i), res, 0, now(), http.MethodPut)
		if err != nil {
			b.Fatal(err)
		}
		writes = append(writes, w)
		if len(writes) == batch || i == n-1 {
			if _, err := be.Commit(ctx, writes...); err != nil {
				b.Fatalf("loading: %v", err)
			}
			writes = writes[:0]
		}
	}
	b.Logf("loaded %d Observations in %v", n, time.Since(start).Round(time.Millisecond))
	hc := ts.Client()
	i := 0
	b.ResetTimer()
	for b.Loop() {
		getOK(b, hc, ts.URL+"/fhir/Observation/o"+strconv.Itoa((i*7919)%n))
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/read")
}

// BenchmarkValidation compares validating a body (strict JSON pass, schema,
// google/fhir semantics) with encoding/json decoding the same bytes.
func BenchmarkValidation(b *testing.B) {
	s, _, _ := benchServer(b, b.TempDir())
	body := []byte(benchObservation)
	ctx := context.Background()
	b.Run("validate", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, issues := s.validator.Validate(ctx, body); len(issues) > 0 {
				for _, is := range issues {
					if isErrorIssue(is) {
						b.Fatalf("invalid: %+v", is)
					}
				}
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}
