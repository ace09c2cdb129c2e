package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/bench/synth"
)

// BenchmarkScaleOutRead measures reads from 8 concurrent clients spread
// over one or two "anodyne serve" processes on one FerretDB database, in
// the default configuration (auth and audit on, a real backend-services
// token; and the same with audit off, to show what the audit trail costs
// on this store): an Observation read by id, and one patient's pain trend
// (Observation?patient=&code=72514-3&_sort=-date&_count=20), on bench/synth
// data whose patients have from a few to hundreds of Observations. A bare
// net/http handler answering 1 KB of JSON to the same clients is the
// ceiling, measured in the same run.
//
// The data set is small (ANODYNE_BENCH_SCALEOUT_RESOURCES, default 600)
// because FerretDB answers every find by a full scan of its collection, so
// loading it costs minutes per thousand resources; and FerretDB runs inside
// the benchmark process, so it shares the cores with the load generator
// and both servers. The figures therefore say how much the server
// processes themselves limit throughput, not how a MongoDB replica set or
// cluster scales.
//
//	go test ./cmd/anodyne -run '^$' -bench ScaleOutRead -benchtime 5s -timeout 30m
func BenchmarkScaleOutRead(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	uri, db := ownFerretDB(ctx, b)
	store := []string{"--mongodb-uri", uri, "--mongodb-database", db}

	n := 600
	if v, err := strconv.Atoi(os.Getenv("ANODYNE_BENCH_SCALEOUT_RESOURCES")); err == nil && v > 1 {
		n = v
	}
	data := b.TempDir()
	man, err := synth.Write(data, synth.Config{Seed: 3, Resources: n})
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	cli(b, append(append([]string{"import", "--quiet"}, store...), man.Files...)...)
	b.Logf("imported %d resources into FerretDB in %s", man.Resources, time.Since(t0).Round(time.Second))

	key, jwks := es384(b)
	jwksFile := filepath.Join(b.TempDir(), "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		b.Fatal(err)
	}
	cli(b, append([]string{"clients", "add", "--id", "reader", "--type", "confidential-asymmetric", "--jwks-file", jwksFile, "--scope", "system/*.rs"}, store...)...)
	// Both processes name one base URL, as behind a balancer, so a token
	// issued by either is valid on both.
	const base = "http://anodyne-balancer.test"
	common := []string{"--auth=on", "--base-url", base}
	roots := map[string][]string{}
	for _, audit := range []string{"on", "off"} {
		args := append(slices.Clone(common), "--audit="+audit)
		roots[audit] = []string{serveMongoChild(b, uri, db, args...), serveMongoChild(b, uri, db, args...)}
	}

	patients := slices.Clone(man.Patients)
	slices.SortFunc(patients, func(x, y synth.PatientSummary) int { return y.Observations - x.Observations })
	ceiling := bareCeiling(b)
	for _, kind := range []string{"ceiling", "read", "pain-trend"} {
		for _, audit := range []string{"on", "off"} {
			for _, procs := range []int{1, 2} {
				if kind == "ceiling" && (procs == 2 || audit == "off") {
					continue
				}
				name := fmt.Sprintf("%s/audit=%s/processes=%d", kind, audit, procs)
				if kind == "ceiling" {
					name = "ceiling"
				}
				b.Run(name, func(b *testing.B) {
					// A fresh token per cell: a slow cell outlives one.
					token := backendTokenAt(b, roots[audit][0]+"/auth/token", base+"/auth/token", "reader", key, "system/*.rs")
					url := func(i int) string {
						root := roots[audit][i%procs]
						switch kind {
						case "ceiling":
							return ceiling
						case "pain-trend":
							return fmt.Sprintf("%s/fhir/Observation?patient=%s&code=http://loinc.org|72514-3&_sort=-date&_count=20", root, patients[i%len(patients)].ID)
						}
						return fmt.Sprintf("%s/fhir/Observation/%s", root, synth.ObservationID(3, i%man.Observations))
					}
					loadParallel(b, token, url)
				})
			}
		}
	}
}

// loadParallel sends GET url(i) with the bearer token from 8 clients (each
// with its own keep-alive connection) until b.N requests are done, and
// reports req/s with the p50 and p99 latency (nearest rank, body read).
func loadParallel(b *testing.B, token string, url func(int) string) {
	var (
		mu   sync.Mutex
		next int
		lats []time.Duration
	)
	b.SetParallelism(4) // 8 clients on 2 cores
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
		defer client.CloseIdleConnections()
		var mine []time.Duration
		for pb.Next() {
			mu.Lock()
			i := next
			next++
			mu.Unlock()
			u := url(i)
			req, err := http.NewRequest(http.MethodGet, u, nil)
			if err != nil {
				b.Error(err)
				return
			}
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Accept", "application/fhir+json")
			t0 := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mine = append(mine, time.Since(t0))
			if resp.StatusCode != http.StatusOK {
				b.Errorf("GET %s: %d", u, resp.StatusCode)
				return
			}
		}
		mu.Lock()
		lats = append(lats, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	if len(lats) == 0 {
		return
	}
	slices.Sort(lats)
	b.ReportMetric(float64(len(lats))/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(lats[(len(lats)-1)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lats[(len(lats)*99+99)/100-1].Microseconds())/1000, "p99-ms")
}

// bareCeiling serves 1 KB of JSON from a bare net/http handler for the
// benchmark's ceiling, and returns its URL.
func bareCeiling(b *testing.B) string {
	body := []byte(`{"resourceType":"Basic","id":"x","text":{"status":"generated","div":"` + strings.Repeat("x", 960) + `"}}`)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/fhir+json")
		_, _ = w.Write(body)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String() + "/"
}
