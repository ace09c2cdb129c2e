package research_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/bench/synth"
	"github.com/anodyne-fhir/anodyne/fhir/fhirtest"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// BenchmarkStats100k: population $stats of the commonest code (pain
// severity) over about 100,000 Synthea-like Observations (bench/synth:
// Pareto histories, Zipf codes) on SQLite, through the real server with
// auth and audit on and real tokens, for a clinician (aggregates in SQL)
// and for a research client (samples rewritten into the project's terms,
// small-cell and complementary suppression). Loading takes most of the
// run; the data go straight to storage with real index entries.
//
//	go test ./research -run '^$' -bench Stats100k -benchtime 20x
//
// ANODYNE_BENCH_DIR keeps the generated and loaded data between runs (a
// pure function of the seed; "done" marks a finished load).
func BenchmarkStats100k(b *testing.B) {
	ctx := context.Background()
	dir, keep := os.LookupEnv("ANODYNE_BENCH_DIR")
	if !keep {
		dir = b.TempDir()
	}
	_, loaded := os.Stat(filepath.Join(dir, "done"))
	var m synth.Manifest
	var err error
	if loaded == nil {
		m, err = synth.ReadManifest(filepath.Join(dir, "ndjson"))
	} else {
		m, err = synth.Write(filepath.Join(dir, "ndjson"), synth.Config{Seed: 1, Resources: 118_000})
	}
	if err != nil {
		b.Fatal(err)
	}
	be, err := sqlite.Open(ctx, filepath.Join(dir, "db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	if loaded != nil {
		loadNDJSON(b, be, m.Files)
		if err := os.WriteFile(filepath.Join(dir, "done"), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	e := startWith(b, be, nil)
	const pain = "72514-3"
	b.Logf("%d Observations of %d patients; %d of code %s", m.Observations, len(m.Patients), m.CodeCounts[pain], pain)
	q := "/Observation/$stats?code=" + pain + "&system=" + url.QueryEscape("http://loinc.org") +
		"&statistic=count,average,minimum,maximum,median,std-dev,20-percent,80-percent"
	stats := func(b *testing.B, who string) {
		st, body := e.do(who, "GET", q, "")
		if st != 200 {
			b.Fatalf("%s: %d %v", who, st, body)
		}
		if n := fmt.Sprint(fhirtest.Get(body, "parameter", 0, "resource", "component", 0, "valueInteger")); n != fmt.Sprint(m.CodeCounts[pain]) {
			b.Fatalf("%s: count %s, want %d", who, n, m.CodeCounts[pain])
		}
	}
	b.Run("clinician", func(b *testing.B) {
		stats(b, "clinician") // the token
		for b.Loop() {
			stats(b, "clinician")
		}
	})
	b.Run("research", func(b *testing.B) {
		stats(b, "research:alpha") // pseudonyms recorded
		for b.Loop() {
			stats(b, "research:alpha")
		}
	})
}

// loadNDJSON commits the resources of files with the registry's index
// entries, 500 to a Commit.
func loadNDJSON(b *testing.B, be storage.Backend, files []string) {
	ctx := context.Background()
	_, reg := harness.Parts(b)
	lu := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	var batch []storage.Write
	flush := func() {
		if len(batch) > 0 {
			if _, err := be.Commit(ctx, batch...); err != nil {
				b.Fatalf("commit: %v", err)
			}
			batch = batch[:0]
		}
	}
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			var res map[string]any
			d := json.NewDecoder(bytes.NewReader(sc.Bytes()))
			d.UseNumber()
			if err := d.Decode(&res); err != nil {
				b.Fatal(err)
			}
			typ, _ := res["resourceType"].(string)
			id, _ := res["id"].(string)
			res["meta"] = map[string]any{"versionId": "1", "lastUpdated": lu.Format(time.RFC3339)}
			raw, err := json.Marshal(res)
			if err != nil {
				b.Fatal(err)
			}
			idx, err := reg.Index(typ, res)
			if err != nil {
				b.Fatalf("index %s/%s: %v", typ, id, err)
			}
			batch = append(batch, storage.Write{Record: storage.Record{Type: typ, ID: id, VersionID: 1, LastUpdated: lu, Method: "POST", JSON: raw}, Index: idx})
			if len(batch) == 500 {
				flush()
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			b.Fatal(err)
		}
	}
	flush()
}
