package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// scenario is one kind of request of the mix. next returns the URL of the
// worker's next request given the body of its previous answer (nil on the
// first), so that paging can follow the server's own next links.
type scenario struct {
	name string
	next func(rng *rand.Rand, prev []byte) string
	// research: the requests carry the research client's token (project
	// "fhirload", de-identified rows) instead of the system client's.
	research bool
}

// result is the outcome of one scenario at one concurrency.
type result struct {
	scenario string
	conns    int
	requests int
	errors   int
	firstErr string
	elapsed  time.Duration
	lat      []time.Duration // sorted
	// serverCPU is the server process's CPU time for the cell, the
	// storing of its AuditEvents included (0 for the ceiling).
	serverCPU time.Duration
	// settleCPU is the part of serverCPU spent after the cell, storing
	// the AuditEvents the server had put off.
	settleCPU time.Duration
}

func (r result) rate() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// cpuPerReq is the server's CPU time per request in µs (0 when unknown).
func (r result) cpuPerReq() float64 {
	if r.requests == 0 {
		return 0
	}
	return float64(r.serverCPU.Microseconds()) / float64(r.requests)
}

// quantile returns the q-quantile (0..1) of sorted latencies by the
// nearest-rank method: the smallest value with at least q of the samples
// at or below it.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted))+0.999999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// run drives sc with conns workers for d, each on its own keep-alive
// connection, and measures every request's latency (headers and full
// body read).
func run(ctx context.Context, client *http.Client, base, token string, sc scenario, conns int, d time.Duration, seed uint64) result {
	type acc struct {
		lat      []time.Duration
		errors   int
		firstErr string
	}
	accs := make([]acc, conns)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := &accs[w]
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			var prev []byte
			for ctx.Err() == nil {
				u := sc.next(rng, prev)
				if !strings.HasPrefix(u, "http") {
					u = base + u
				}
				req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, u, nil)
				if err != nil {
					a.errors++
					a.firstErr = err.Error()
					return
				}
				req.Header.Set("Accept", "application/fhir+json")
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				t0 := time.Now()
				res, err := client.Do(req)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(res.Body)
					res.Body.Close()
				}
				el := time.Since(t0)
				switch {
				case err != nil:
					a.errors++
					if a.firstErr == "" {
						a.firstErr = err.Error()
					}
					prev = nil
				case res.StatusCode != http.StatusOK:
					a.errors++
					if a.firstErr == "" {
						a.firstErr = fmt.Sprintf("%s: %d %.200s", u, res.StatusCode, body)
					}
					prev = nil
				default:
					a.lat = append(a.lat, el)
					prev = body
				}
			}
		}()
	}
	wg.Wait()
	r := result{scenario: sc.name, conns: conns, elapsed: time.Since(start)}
	for _, a := range accs {
		r.lat = append(r.lat, a.lat...)
		r.errors += a.errors
		if r.firstErr == "" {
			r.firstErr = a.firstErr
		}
	}
	r.requests = len(r.lat)
	slices.Sort(r.lat)
	return r
}

// nextLink is the Bundle's link with relation "next", "" when none.
func nextLink(body []byte) string {
	var b struct {
		Link []struct{ Relation, URL string }
	}
	if json.Unmarshal(body, &b) != nil {
		return ""
	}
	for _, l := range b.Link {
		if l.Relation == "next" {
			return l.URL
		}
	}
	return ""
}

// pager returns a scenario that opens first and follows next links for
// at most pages pages, then starts over. Each worker has its own rng, which
// keys its page depth.
func pager(name string, first func(rng *rand.Rand) string, pages int) scenario {
	var mu sync.Mutex
	depth := map[*rand.Rand]int{}
	return scenario{name: name, next: func(rng *rand.Rand, prev []byte) string {
		mu.Lock()
		defer mu.Unlock()
		if prev != nil && depth[rng] < pages {
			if u := nextLink(prev); u != "" {
				depth[rng]++
				return u
			}
		}
		depth[rng] = 1
		return first(rng)
	}}
}
