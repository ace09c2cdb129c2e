//go:build unix

package fhir

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// BenchmarkTransactionPrepare measures the CPU our code spends per
// resource of a Synthea transaction outside the database: decoding the
// Bundle, validating every resource, resolving and rewriting references,
// stamping meta, encoding and extracting index entries. It stops before
// the Commit (the Bundles hold only POSTs, so planning reads nothing).
func BenchmarkTransactionPrepare(b *testing.B) {
	files, err := filepath.Glob("../testdata/synthea/*.json")
	if err != nil || len(files) == 0 {
		b.Fatalf("no Synthea bundles: %v", err)
	}
	var bundles [][]byte
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		bundles = append(bundles, raw)
	}
	ctx := context.Background()
	be, err := sqlite.Open(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	s, err := New(Config{BaseURL: "http://bench.example", Backend: be})
	if err != nil {
		b.Fatal(err)
	}
	resources := 0
	b.ResetTimer()
	start, cpu0 := time.Now(), threadsCPU()
	for i := 0; i < b.N; i++ {
		n, err := s.prepareBundle(ctx, bundles[i%len(bundles)])
		if err != nil {
			b.Fatal(err)
		}
		resources += n
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(resources), "µs/resource")
	b.ReportMetric(float64((threadsCPU()-cpu0).Microseconds())/float64(resources), "cpu-µs/resource")
}

// threadsCPU is the CPU time (user+system) of the process, which is
// what a loaded machine cannot inflate the way it inflates wall time.
func threadsCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// prepareBundle runs a transaction Bundle up to its Commit.
func (s *Server) prepareBundle(ctx context.Context, raw []byte) (int, error) {
	var br bundleRequest
	if err := json.Unmarshal(raw, &br); err != nil {
		return 0, err
	}
	entries := make([]*txEntry, len(br.Entry))
	for i, be := range br.Entry {
		e := &txEntry{n: i, fullURL: be.FullURL, raw: be.Resource, method: be.Request.Method, url: be.Request.URL}
		if err := s.parseEntryURL(e); err != nil {
			return 0, err
		}
		entries[i] = e
	}
	if err := s.parseEntries(ctx, entries); err != nil {
		return 0, err
	}
	writes, err := s.plan(ctx, entries, true)
	return len(writes), err
}
