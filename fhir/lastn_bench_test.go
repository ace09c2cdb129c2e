package fhir

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// BenchmarkLastN: Observation/$lastn for a patient with 90 days of device
// readings (8 codes, SpO2 under two codings, about 2,900 Observations)
// among 10 other patients, on SQLite through HTTP, by the seeking strategy
// (forced), by grouping in memory (the default at this size), and, for
// comparison, the paged search a client would make without $lastn.
func BenchmarkLastN(b *testing.B) {
	s, ts, be := benchServer(b, b.TempDir())
	ctx := context.Background()
	codes := [][]string{{"8867-4"}, {"2708-6", "59408-5"}, {"85354-9"}, {"29463-7"}, {"41653-7"}, {"72514-3"}, {"9279-1"}, {"8310-5"}}
	t0 := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	var writes []storage.Write
	flush := func() {
		if _, err := be.Commit(ctx, writes...); err != nil {
			b.Fatalf("loading: %v", err)
		}
		writes = writes[:0]
	}
	n := 0
	for p := range 11 {
		perDay := 4
		if p > 0 {
			perDay = 1
		}
		for day := range 90 {
			for k, cs := range codes {
				for r := range perDay {
					if k >= 5 && r > 0 {
						continue // daily codes
					}
					var coding []any
					for _, c := range cs {
						coding = append(coding, map[string]any{"system": "http://loinc.org", "code": c})
					}
					res := map[string]any{
						"resourceType": "Observation", "status": "final",
						"category": []any{map[string]any{"coding": []any{map[string]any{
							"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}}}},
						"code":              map[string]any{"coding": coding},
						"subject":           map[string]any{"reference": fmt.Sprintf("Patient/p%d", p)},
						"effectiveDateTime": t0.Add(time.Duration(day)*24*time.Hour + time.Duration(r*6+k)*time.Hour).Format(time.RFC3339),
						"valueQuantity":     map[string]any{"value": 70, "unit": "/min"},
					}
					w, err := s.prepare("Observation", fmt.Sprintf("o%d", n), res, 0, now(), http.MethodPut)
					if err != nil {
						b.Fatal(err)
					}
					n++
					writes = append(writes, w)
					if len(writes) == 1000 {
						flush()
					}
				}
			}
		}
	}
	flush()
	hc := ts.Client()
	q := "patient=p0&category=vital-signs"
	for _, bc := range []struct {
		name, path string
		probe      int
	}{
		{"seek", "/fhir/Observation/$lastn?" + q + "&max=3", 1},
		{"memory", "/fhir/Observation/$lastn?" + q + "&max=3", 0},
		{"search-all", "/fhir/Observation?" + q + "&_sort=-date&_count=1000", 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s.lastnProbe = bc.probe
			for b.Loop() {
				url := ts.URL + bc.path
				for url != "" {
					url = getNext(b, hc, ts.URL, url)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
		})
	}
}

// getNext GETs url and returns the Bundle's next link (on root), or "".
func getNext(b *testing.B, hc *http.Client, root, url string) string {
	res, err := hc.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	var bundle struct {
		Link []struct{ Relation, URL string } `json:"link"`
	}
	if err := json.NewDecoder(res.Body).Decode(&bundle); err != nil || res.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %d %v", url, res.StatusCode, err)
	}
	for _, l := range bundle.Link {
		if l.Relation == "next" {
			return strings.Replace(l.URL, "http://bench.example", root, 1)
		}
	}
	return ""
}
