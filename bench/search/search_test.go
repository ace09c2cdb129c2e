// Package search holds the search benchmarks of the issue: 100,000
// Observations for 1,000 patients on the embedded SQLite store, queried
// through the real FHIR handler (no network), with p50/p99 latency at
// 10,000 and 100,000 Observations. It owns no product code and must not be
// imported.
//
// Run (takes a few minutes, most of it loading):
//
//	go test -run '^$' -bench . -benchtime 200x ./bench/search/
package search

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// now anchors the generated data: Observations spread over the year
// before it, lastUpdated over the 30 days before it.
var now = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

const (
	painCode   = "72514-3"
	spo2Code   = "2708-6"
	perPatient = 100
)

// load writes patients and their Observations with real index entries
// from the registry, in Commit batches.
func load(b *testing.B, be storage.Backend, reg *resources.Registry, patients int) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	var batch []storage.Write
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if _, err := be.Commit(ctx, batch...); err != nil {
			b.Fatalf("commit: %v", err)
		}
		batch = batch[:0]
	}
	add := func(typ, id string, res map[string]any) {
		lu := now.Add(-time.Duration(rng.Int64N(int64(30 * 24 * time.Hour)))).Truncate(time.Millisecond)
		res["meta"] = map[string]any{"versionId": "1", "lastUpdated": lu.Format("2006-01-02T15:04:05.000Z07:00")}
		raw, err := json.Marshal(res)
		if err != nil {
			b.Fatal(err)
		}
		var m map[string]any
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			b.Fatal(err)
		}
		idx, err := reg.Index(typ, m)
		if err != nil {
			b.Fatalf("index %s/%s: %v", typ, id, err)
		}
		batch = append(batch, storage.Write{Record: storage.Record{Type: typ, ID: id, VersionID: 1, LastUpdated: lu, Method: "POST", JSON: raw}, Index: idx})
		if len(batch) == 500 {
			flush()
		}
	}
	for p := range patients {
		pid := fmt.Sprintf("pt%04d", p)
		add("Patient", pid, map[string]any{"resourceType": "Patient", "id": pid,
			"name": []any{map[string]any{"family": fmt.Sprintf("Fam%04d", p), "given": []any{"Given"}}}, "gender": "female", "birthDate": "1970-01-01"})
		for i := range perPatient {
			oid := fmt.Sprintf("o%04d-%03d", p, i)
			eff := now.Add(-time.Duration(rng.Int64N(int64(365 * 24 * time.Hour)))).Truncate(time.Second)
			var code, display, unit, ucum string
			var value float64
			if i%2 == 0 {
				code, display, unit, ucum, value = painCode, "Pain severity - 0-10 verbal numeric rating [Score] - Reported", "score", "{score}", float64(rng.IntN(11))
			} else {
				code, display, unit, ucum, value = spo2Code, "Oxygen saturation in Arterial blood", "%", "%", float64(85+rng.IntN(16))
			}
			add("Observation", oid, map[string]any{"resourceType": "Observation", "id": oid, "status": "final",
				"category":          []any{map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}}}},
				"code":              map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": code, "display": display}}},
				"subject":           map[string]any{"reference": "Patient/" + pid},
				"effectiveDateTime": eff.Format(time.RFC3339),
				"valueQuantity":     map[string]any{"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": ucum},
			})
		}
	}
	flush()
}

func BenchmarkSearch(b *testing.B) {
	v, err := conformance.NewValidator()
	if err != nil {
		b.Fatal(err)
	}
	for _, patients := range []int{100, 1000} {
		dir := b.TempDir()
		be, err := sqlite.Open(context.Background(), dir)
		if err != nil {
			b.Fatal(err)
		}
		const base = "http://bench.local"
		reg, err := resources.Load(resources.WithBaseURL(base + "/fhir"))
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		load(b, be, reg, patients)
		b.Logf("loaded %d Observations in %s", patients*perPatient, time.Since(start).Round(time.Millisecond))
		srv, err := fhir.New(fhir.Config{BaseURL: base, Backend: be, Validator: v, Registry: reg,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		h := srv.Handler()
		since := now.Add(-6 * time.Hour).Format("2006-01-02T15:04:05Z")
		queries := []struct{ name, q string }{
			{"a_patient_pain_sorted", "/fhir/Observation?patient=Patient/pt%04d&code=http://loinc.org|72514-3&_sort=-date&_count=20"},
			{"b_spo2_below_90", "/fhir/Observation?code=http://loinc.org|2708-6&value-quantity=lt90&_count=20"},
			// The RPM dashboard: the latest readings of one code over every patient.
			{"b2_spo2_sorted_date", "/fhir/Observation?code=http://loinc.org|2708-6&_sort=-date&_count=20"},
			{"c_lastUpdated", "/fhir/Observation?_lastUpdated=gt" + since + "&_count=20"},
			{"d1_chain_patient_name", "/fhir/Observation?subject:Patient.name=Fam%04d&_count=20"},
			{"d2_include_patient", "/fhir/Observation?patient=Patient/pt%04d&_include=Observation:patient&_count=20"},
		}
		for _, q := range queries {
			b.Run(fmt.Sprintf("%s/obs=%d", q.name, patients*perPatient), func(b *testing.B) {
				lat := make([]time.Duration, 0, b.N)
				rng := rand.New(rand.NewPCG(3, 4))
				for b.Loop() {
					u := q.q
					if slices.Contains([]string{"a_patient_pain_sorted", "d1_chain_patient_name", "d2_include_patient"}, q.name) {
						u = fmt.Sprintf(q.q, rng.IntN(patients))
					}
					req := httptest.NewRequest(http.MethodGet, u, nil)
					rec := httptest.NewRecorder()
					t0 := time.Now()
					h.ServeHTTP(rec, req)
					lat = append(lat, time.Since(t0))
					if rec.Code != http.StatusOK {
						b.Fatalf("%s: %d %s", u, rec.Code, rec.Body.String())
					}
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			})
		}
		be.Close()
	}
}
