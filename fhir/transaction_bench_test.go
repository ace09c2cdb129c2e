//go:build unix

package fhir_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkTransactionIngest posts the Synthea transaction Bundles of
// testdata over HTTP to a server on SQLite, from 1 and 4 concurrent
// clients, and reports resources per second and the process CPU time per
// resource (our code, HTTP, JSON and the embedded database together; see
// BenchmarkTransactionPrepare for our code alone).
func BenchmarkTransactionIngest(b *testing.B) {
	bundles := syntheaBundles(b)
	sizes := make([]int64, len(bundles))
	for i, raw := range bundles {
		var in struct {
			Entry []struct{} `json:"entry"`
		}
		if err := json.Unmarshal(raw, &in); err != nil {
			b.Fatal(err)
		}
		sizes[i] = int64(len(in.Entry))
	}
	for _, clients := range []int{1, 4} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			be, err := sqliteOpen(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { be.Close() })
			c := newServer(b, be, nil)
			var next, resources atomic.Int64
			cpu0 := processCPU()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						k := int(i) % len(bundles)
						status, body, err := postBundle(c, string(bundles[k]))
						if err != nil || status != http.StatusOK {
							b.Errorf("transaction: %d %v %.300s", status, err, body)
							return
						}
						resources.Add(sizes[k])
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			n := float64(resources.Load())
			b.ReportMetric(n/elapsed.Seconds(), "resources/s")
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/n, "cpu-µs/resource")
		})
	}
}

// processCPU is the CPU time (user+system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// postBundle sends a Bundle from any goroutine (client.do may call Fatal, which
// only the benchmark's own goroutine may).
func postBundle(c *client, body string) (int, []byte, error) {
	res, err := c.srv.Client.Post(c.base, "application/fhir+json", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	return res.StatusCode, raw, err
}
