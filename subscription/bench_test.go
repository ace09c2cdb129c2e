package subscription_test

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth/smart"
	"github.com/anodyne-fhir/anodyne/bench/synth"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/fhir/fhirtest"
	"github.com/anodyne-fhir/anodyne/subscription"
)

// BenchmarkSubscriptions measures, in one run and in the default
// configuration (SQLite, the built-in SMART server's real signed tokens
// verified on every request, auth.Policy, the audit middleware recording
// AuditEvents, the subscription service with its default settings but
// loopback endpoints allowed), over real HTTP:
//
//   - ceiling: a bare Echo handler answering the same POST with 1 KB of
//     JSON, over the same kind of client;
//
//   - write/subscriptions=N: one Observation create (Zipf-skewed LOINC
//     codes of bench/synth, 200 patients) with N active Subscriptions of
//     the realistic shape "code + patient + threshold" (codes drawn from
//     the same skew, so common codes have many Subscriptions); the few
//     that match are delivered to a real receiver meanwhile;
//
//   - latency: with the 1,000 Subscriptions still active, pain scores
//     written at about 100 per second (16 writers) to one full-payload
//     rest-hook Subscription: the time from each write's answer to the
//     notification's arrival at the receiver (p50-ms, p99-ms), next to
//     the bare round trip to that receiver from the same client
//     (hop-p50-ms, hop-p99-ms).
//
//     go test ./subscription -run '^$' -bench Subscriptions -benchtime 200x -timeout 25m
func BenchmarkSubscriptions(b *testing.B) {
	codes, err := synth.Codes()
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 11))
	cum := make([]float64, len(codes))
	sum := 0.0
	for i := range codes {
		sum += 1 / math.Pow(float64(i+1), 1.1)
		cum[i] = sum
	}
	zipf := func() synth.Code {
		i, _ := slices.BinarySearch(cum, rng.Float64()*sum)
		return codes[min(i, len(codes)-1)]
	}
	const patients = 200
	patient := func() string { return fmt.Sprintf("p%03d", rng.IntN(patients)) }

	var mu sync.Mutex
	arrived := map[string]time.Time{}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Method == http.MethodPut {
			mu.Lock()
			arrived[path.Base(r.URL.Path)] = time.Now()
			mu.Unlock()
		}
	}))
	defer rcv.Close()

	var svc *subscription.Service
	s, as := env.StartSMART(b, backends()[0].Open(b), func(cfg *fhir.Config) {
		var err error
		svc, err = subscription.New(subscription.Config{Backend: cfg.Backend, Authorizer: cfg.Authorizer, Logger: cfg.Logger,
			AllowLoopback: true, MaxPerClient: 10000})
		if err != nil {
			b.Fatal(err)
		}
		cfg.Observers = append(cfg.Observers, svc)
		svc.Configure(cfg)
	})
	svc.Attach(s.FHIR)
	srv := &server{Server: s, svc: svc}
	b.Cleanup(runService(b, svc))
	ehr := as.BackendClient(b, smart.Client{ID: "ehr", Scopes: "system/*.cruds"})
	bearer := ehr.Bearer(b, "system/*.cruds")

	// The ceiling: a bare handler, same client.
	e := echo.New()
	kb := `{"resourceType":"OperationOutcome","text":"` + strings.Repeat("x", 1000) + `"}`
	e.POST("/fhir/Observation", func(c echo.Context) error {
		_, _ = io.Copy(io.Discard, c.Request().Body)
		return c.Blob(http.StatusCreated, "application/fhir+json", []byte(kb))
	})
	bare := httptest.NewServer(e)
	defer bare.Close()
	ceiling := &fhirtest.Server{Root: bare.URL, Base: bare.URL + "/fhir", Client: bare.Client()}

	write := func(b *testing.B, to *fhirtest.Server) {
		c := zipf()
		v := int(c.Min + rng.Float64()*(c.Max-c.Min))
		to.Do(b, "POST", "/Observation", observation("", c.Code, patient(), v), bearer).Expect(b, http.StatusCreated)
	}
	b.Run("ceiling", func(b *testing.B) {
		for b.Loop() {
			write(b, ceiling)
		}
	})
	active := 0
	for _, n := range []int{0, 100, 1000} {
		for ; active < n; active++ {
			c := zipf()
			crit := fmt.Sprintf("Observation?code=http://loinc.org|%s&subject=Patient/%s&value-quantity=ge%d", c.Code, patient(), int(c.Max*0.9))
			srv.Do(b, "POST", "/Subscription", subscriptionJSON(crit, rcv.URL+"/hook", ""), bearer).Expect(b, http.StatusCreated)
		}
		b.Run(fmt.Sprintf("write/subscriptions=%d", n), func(b *testing.B) {
			for b.Loop() {
				write(b, srv.Server)
			}
		})
	}

	round := 0
	b.Run("latency", func(b *testing.B) {
		round++
		if round == 1 {
			srv.Do(b, "POST", "/Subscription", subscriptionJSON("Observation?code=http://loinc.org|"+painCode+"&subject=Patient/lat",
				rcv.URL+"/hook", "application/fhir+json"), bearer).Expect(b, http.StatusCreated)
			time.Sleep(2 * time.Second) // the registry of the delivery loop has it
		}
		const writes, rate, writers = 300, 100, 16
		// One round however large b.N: the round is the measurement.
		var lat, hop []time.Duration
		for range 1 {
			acked := map[string]time.Time{}
			var amu sync.Mutex
			ids := make(chan string)
			var wg sync.WaitGroup
			for range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for id := range ids {
						r := srv.Do(b, "PUT", "/Observation/"+id, observation(id, painCode, "lat", 5), bearer)
						at := time.Now()
						if r.Status != http.StatusCreated {
							b.Errorf("PUT %s: %d %s", id, r.Status, r.Body)
							continue
						}
						amu.Lock()
						acked[id] = at
						amu.Unlock()
					}
				}()
			}
			tick := time.NewTicker(time.Second / rate)
			start := time.Now()
			for i := range writes {
				<-tick.C
				ids <- fmt.Sprintf("lat-%d-%d", round, i)
			}
			close(ids)
			wg.Wait()
			tick.Stop()
			b.ReportMetric(float64(writes)/time.Since(start).Seconds(), "writes/s")
			deadline := time.Now().Add(60 * time.Second)
			for {
				mu.Lock()
				n := 0
				for id := range acked {
					if _, ok := arrived[id]; ok {
						n++
					}
				}
				mu.Unlock()
				if n == len(acked) {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d notifications arrived", n, len(acked))
				}
				time.Sleep(20 * time.Millisecond)
			}
			mu.Lock()
			for id, at := range acked {
				lat = append(lat, max(arrived[id].Sub(at), 0))
			}
			mu.Unlock()
			for range 300 {
				t0 := time.Now()
				r, err := rcv.Client().Post(rcv.URL+"/hop", "application/fhir+json", strings.NewReader(kb))
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, r.Body)
				r.Body.Close()
				hop = append(hop, time.Since(t0))
			}
		}
		pct := func(d []time.Duration, p int) float64 {
			slices.Sort(d)
			return float64(d[(len(d)-1)*p/100]) / 1e6
		}
		b.ReportMetric(pct(lat, 50), "p50-ms")
		b.ReportMetric(pct(lat, 99), "p99-ms")
		b.ReportMetric(pct(hop, 50), "hop-p50-ms")
		b.ReportMetric(pct(hop, 99), "hop-p99-ms")
	})
}
