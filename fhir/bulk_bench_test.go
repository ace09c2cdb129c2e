package fhir_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/fhir"
)

// benchCopies is how many times the Synthea Bundles are loaded (each
// transaction gives its resources new ids) to make a data set worth timing.
const benchCopies = 10

// procCPU is the process's user+system CPU time so far.
func procCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadCopies(b *testing.B, srv *fhir.Server) int {
	b.Helper()
	n := 0
	for range benchCopies {
		n += importSynthea(b, srv)
	}
	return n
}

// BenchmarkBulkExport times a system $export of the whole data set over
// HTTP: kick-off, polling, and downloading every file.
func BenchmarkBulkExport(b *testing.B) {
	be := backends()[0].open(b)
	c, srv := bulkServer(b, be, b.TempDir(), nil)
	n := loadCopies(b, srv)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		status := kickOff(b, c, "/$export")
		got := download(b, c, await(b, c, status))
		if countAll(got) != n {
			b.Fatalf("exported %d of %d", countAll(got), n)
		}
		c.do("DELETE", status, "")
	}
	b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "resources/s")
}

// BenchmarkBulkExportDirect times the export of the command line's direct
// mode (no HTTP, no polling): the cost of the queries and the files.
func BenchmarkBulkExportDirect(b *testing.B) {
	be := backends()[0].open(b)
	_, srv := bulkServer(b, be, "", nil)
	n := loadCopies(b, srv)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		files, err := srv.Export(context.Background(), nil, false, "", b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		var got int64
		for _, f := range files {
			got += f.Count
		}
		if int(got) != n {
			b.Fatalf("exported %d of %d", got, n)
		}
	}
	b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "resources/s")
}

// BenchmarkImport times the importer (what "anodyne import" runs in
// direct mode) into an empty SQLite store: the Synthea transaction
// Bundles, and the same resources as NDJSON.
func BenchmarkImport(b *testing.B) {
	bundles, _ := filepath.Glob("../testdata/synthea/*.json")
	var bundleFiles []string
	for range benchCopies {
		bundleFiles = append(bundleFiles, bundles...)
	}
	// The NDJSON input is an export of the loaded copies.
	_, srv := bulkServer(b, backends()[0].open(b), "", nil)
	n := loadCopies(b, srv)
	ndjsonDir := b.TempDir()
	if _, err := srv.Export(context.Background(), nil, false, "", ndjsonDir); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		paths []string
	}{{"transaction-bundles", bundleFiles}, {"ndjson", []string{ndjsonDir}}} {
		b.Run(tc.name, func(b *testing.B) {
			var stored int64
			var elapsed, cpu time.Duration
			for range b.N {
				b.StopTimer()
				dir, err := os.MkdirTemp(b.TempDir(), "db")
				if err != nil {
					b.Fatal(err)
				}
				be, err := sqliteOpen(dir)
				if err != nil {
					b.Fatal(err)
				}
				_, dst := bulkServer(b, be, "", nil)
				b.StartTimer()
				start, cpu0 := time.Now(), procCPU(b)
				rep, err := dst.Importer().ImportPaths(context.Background(), tc.paths, fhir.ImportOptions{Restart: true})
				elapsed += time.Since(start)
				cpu += procCPU(b) - cpu0
				if err != nil || rep.Failed > 0 || int(rep.Stored) != n {
					b.Fatalf("import: %v, stored %d of %d, failed %d: %+v", err, rep.Stored, n, rep.Failed, rep.Failures)
				}
				stored += rep.Stored
				b.StopTimer()
				dst.Close()
				be.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(stored)/elapsed.Seconds(), "resources/s")
			// CPU time is steadier than wall time on a shared machine.
			b.ReportMetric(float64(cpu.Microseconds())/float64(stored), "cpu-µs/resource")
		})
	}
}
