// Command fhirload is the end-to-end benchmark of issue 10: it generates
// Synthea-like data (bench/synth), loads it with the real "anodyne import",
// runs the real "anodyne serve" in the default configuration (auth on,
// audit on, a real Backend Services token from the built-in authorization
// server got with "anodyne token"), and drives a mix of reads and
// searches at 1, 8 and 32 connections, printing req/s, p50 and p99 next
// to a bare-handler ceiling (a trivial Echo handler returning 1 KB of
// JSON through the same net/http server settings) measured in the same
// run. With -audit-off it also measures reads with --audit off.
//
// It owns no product code and must not be imported. Figures depend on the
// machine and its load; they are reported, never asserted.
//
//	go run ./bench/fhirload -resources 100000
//	go run ./bench/fhirload -resources 100000 -scenarios read -conns 32 -audit-off
//
// The data directory of a given seed and size is kept under -work and
// reused by later runs (delete it to import again).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/bench/synth"
)

type config struct {
	work      string
	bin       string
	resources int
	seed      uint64
	duration  time.Duration
	conns     []int
	scenarios []string
	auditOff  bool
	onlyData  bool
}

func main() {
	log.SetFlags(0)
	var cfg config
	var conns, scen string
	flag.StringVar(&cfg.work, "work", filepath.Join(os.TempDir(), "anodyne-fhirload"), "working directory: the binary, generated NDJSON and data directories (kept between runs)")
	flag.StringVar(&cfg.bin, "bin", "", "anodyne binary to use (default: go build ./cmd/anodyne into -work)")
	flag.IntVar(&cfg.resources, "resources", 100000, "resources to generate and import")
	flag.Uint64Var(&cfg.seed, "seed", 1, "generator seed")
	flag.DurationVar(&cfg.duration, "duration", 2*time.Second, "how long each scenario runs at each concurrency")
	flag.StringVar(&conns, "conns", "1,8,32", "concurrent connections, comma-separated")
	flag.StringVar(&scen, "scenarios", "all", "comma-separated scenario names, or all")
	flag.BoolVar(&cfg.auditOff, "audit-off", false, "also measure reads with --audit off (the cost of the audit trail)")
	flag.BoolVar(&cfg.onlyData, "import-only", false, "generate and import the data set, then stop")
	flag.Parse()
	for _, c := range strings.Split(conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n <= 0 {
			log.Fatalf("-conns: bad value %q", c)
		}
		cfg.conns = append(cfg.conns, n)
	}
	if scen != "all" {
		cfg.scenarios = strings.Split(scen, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := benchmark(ctx, cfg, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func benchmark(ctx context.Context, cfg config, out io.Writer) error {
	if err := os.MkdirAll(cfg.work, 0o755); err != nil {
		return err
	}
	if cfg.bin == "" {
		cfg.bin = filepath.Join(cfg.work, "anodyne")
		fmt.Fprintf(out, "building %s\n", cfg.bin)
		if o, err := exec.CommandContext(ctx, "go", "build", "-o", cfg.bin, "github.com/anodyne-fhir/anodyne/cmd/anodyne").CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %w\n%s", err, o)
		}
	}
	name := fmt.Sprintf("s%d-n%d", cfg.seed, cfg.resources)
	data := filepath.Join(cfg.work, "data-"+name)
	jsonDir := filepath.Join(cfg.work, "ndjson-"+name)
	m, err := prepareData(ctx, cfg, jsonDir, data, out)
	if err != nil {
		return err
	}
	if cfg.onlyData {
		return nil
	}
	key := filepath.Join(cfg.work, "key-"+name+".jwk")
	if _, err := os.Stat(key); errors.Is(err, fs.ErrNotExist) {
		if o, err := exec.CommandContext(ctx, cfg.bin, "clients", "add", "--data-dir", data, "--id", "fhirload",
			"--generate-key", key, "--scope", "system/*.rs").CombinedOutput(); err != nil {
			return fmt.Errorf("clients add: %w\n%s", err, o)
		}
	}
	rkey := filepath.Join(cfg.work, "key-"+name+"-research.jwk")
	if _, err := os.Stat(rkey); errors.Is(err, fs.ErrNotExist) {
		if o, err := exec.CommandContext(ctx, cfg.bin, "clients", "add", "--data-dir", data, "--id", "fhirload-research",
			"--generate-key", rkey, "--scope", "system/*.rs", "--research-project", "fhirload").CombinedOutput(); err != nil {
			return fmt.Errorf("clients add (research): %w\n%s", err, o)
		}
	}
	scs := scenarios(m)
	if cfg.scenarios != nil {
		scs = slices.DeleteFunc(scs, func(s scenario) bool { return !slices.Contains(cfg.scenarios, s.name) })
	}
	maxConns := slices.Max(cfg.conns)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: maxConns, MaxConnsPerHost: maxConns, IdleConnTimeout: time.Minute}, Timeout: time.Minute}

	fmt.Fprintf(out, "\nshared machine: %d CPUs reported, load average %s; client and server share them\n", runtime.NumCPU(), loadavg())
	ceil, err := ceiling(ctx, client, scs, cfg)
	if err != nil {
		return err
	}
	var rows []result
	configs := []string{"on"}
	if cfg.auditOff {
		configs = append(configs, "off")
	}
	audit := map[string][]result{}
	for _, a := range configs {
		srv, err := startServe(ctx, cfg.bin, data, a)
		if err != nil {
			return err
		}
		token, err := srv.token(ctx, cfg.bin, "fhirload", key)
		if err != nil {
			srv.stop()
			return err
		}
		rtoken, err := srv.token(ctx, cfg.bin, "fhirload-research", rkey)
		if err != nil {
			srv.stop()
			return err
		}
		if err := checkAuthOn(ctx, client, srv.base); err != nil {
			srv.stop()
			return err
		}
		for _, sc := range scs {
			if a == "off" && sc.name != "read" {
				continue
			}
			tok := token
			if sc.research {
				tok = rtoken
			}
			for _, c := range cfg.conns {
				// A short warm-up opens the connections and the page cache
				// (and records a research project's pseudonyms).
				run(ctx, client, srv.base, tok, sc, c, cfg.duration/5, cfg.seed)
				if err := srv.settle(ctx, client, token); err != nil {
					srv.stop()
					return err
				}
				cpu0 := srv.cpu()
				r := run(ctx, client, srv.base, tok, sc, c, cfg.duration, cfg.seed)
				// The server's CPU for the cell includes storing the
				// cell's AuditEvents, however late the server does it.
				cpu1 := srv.cpu()
				if err := srv.settle(ctx, client, token); err != nil {
					srv.stop()
					return err
				}
				r.serverCPU, r.settleCPU = srv.cpu()-cpu0, srv.cpu()-cpu1
				if a == "on" {
					rows = append(rows, r)
				}
				if sc.name == "read" {
					audit[a] = append(audit[a], r)
				}
			}
		}
		client.CloseIdleConnections()
		if err := srv.stop(); err != nil {
			return err
		}
	}
	report(out, ceil, rows, audit)
	return nil
}

// prepareData generates and imports the data set unless data already
// holds it, and reports ingest speed and size on disk.
func prepareData(ctx context.Context, cfg config, jsonDir, data string, out io.Writer) (synth.Manifest, error) {
	done := filepath.Join(data, ".fhirload-imported")
	if _, err := os.Stat(done); err == nil {
		m, err := synth.ReadManifest(jsonDir)
		if err == nil {
			fmt.Fprintf(out, "reusing %s (%d resources)\n", data, m.Resources)
		}
		return m, err
	}
	if err := os.RemoveAll(data); err != nil {
		return synth.Manifest{}, err
	}
	t0 := time.Now()
	m, err := synth.Write(jsonDir, synth.Config{Seed: cfg.seed, Resources: cfg.resources})
	if err != nil {
		return m, err
	}
	fmt.Fprintf(out, "generated %d resources (%d patients, %d encounters, %d observations; %.1f MB NDJSON) in %s\n",
		m.Resources, len(m.Patients), m.Encounters, m.Observations, float64(m.Bytes)/1e6, time.Since(t0).Round(time.Millisecond))
	args := append([]string{"import", "--data-dir", data, "--quiet"}, m.Files...)
	cmd := exec.CommandContext(ctx, cfg.bin, args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	t0 = time.Now()
	if err := cmd.Run(); err != nil {
		return m, fmt.Errorf("anodyne import: %w\n%s", err, buf.String())
	}
	el := time.Since(t0)
	rss := int64(0)
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss * 1024
	}
	size, err := dirSize(data)
	if err != nil {
		return m, err
	}
	fmt.Fprintf(out, "anodyne import: %s", buf.String())
	fmt.Fprintf(out, "ingest: %d resources in %s wall = %.0f resources/s; peak RSS %.0f MB\n", m.Resources, el.Round(time.Millisecond), float64(m.Resources)/el.Seconds(), float64(rss)/1e6)
	fmt.Fprintf(out, "on disk: %.1f MB = %.0f bytes/resource = %.2fx the NDJSON (%.0f bytes/resource)\n",
		float64(size)/1e6, float64(size)/float64(m.Resources), float64(size)/float64(m.Bytes), float64(m.Bytes)/float64(m.Resources))
	return m, os.WriteFile(done, nil, 0o644)
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// scenarios is the request mix, from what the manifest says of the data:
// the patient with the longest history, the rarest code in it, random
// Observation ids.
func scenarios(m synth.Manifest) []scenario {
	heavy := m.Patients[0]
	var withObs []string
	for _, p := range m.Patients {
		if p.Observations > heavy.Observations {
			heavy = p
		}
		if p.Observations > 0 {
			withObs = append(withObs, p.ID)
		}
	}
	rare, rareN := "", 0
	for c, n := range heavy.Codes {
		if rare == "" || n < rareN || n == rareN && c < rare {
			rare, rareN = c, n
		}
	}
	seed := m.Config.Seed
	const loinc = "http://loinc.org|"
	const stats = "/fhir/Observation/$stats?code=72514-3&system=http%3A%2F%2Floinc.org&statistic=count,average,minimum,maximum,median,std-dev,20-percent,80-percent"
	const search1000 = "/fhir/Observation?code=" + loinc + "72514-3&_count=1000"
	fixed := func(name, u string) scenario {
		return scenario{name: name, next: func(*rand.Rand, []byte) string { return u }}
	}
	return []scenario{
		{name: "read", next: func(rng *rand.Rand, _ []byte) string {
			return "/fhir/Observation/" + synth.ObservationID(seed, rng.IntN(m.Observations))
		}},
		fixed("pain-trend-heaviest", "/fhir/Observation?patient=Patient/"+heavy.ID+"&code="+loinc+"72514-3&_sort=-date&_count=20"),
		{name: "pain-trend-any", next: func(rng *rand.Rand, _ []byte) string {
			return "/fhir/Observation?patient=Patient/" + withObs[rng.IntN(len(withObs))] + "&code=" + loinc + "72514-3&_sort=-date&_count=20"
		}},
		fixed("rare-code-heaviest", "/fhir/Observation?patient=Patient/"+heavy.ID+"&code="+loinc+rare+"&_count=20"),
		fixed("system-code-range", "/fhir/Observation?code="+loinc+"8302-2&value-quantity=gt180&_count=20"),
		fixed("system-code-sorted", "/fhir/Observation?code="+loinc+"72514-3&_sort=-date&_count=20"),
		pager("paging-heaviest", func(*rand.Rand) string { return "/fhir/Observation?patient=Patient/" + heavy.ID + "&_count=50" }, 10),
		fixed("everything-heaviest", "/fhir/Patient/"+heavy.ID+"/$everything?_count=1000"),
		// $lastn (issue 11): the latest reading of every vital sign of the
		// largest history.
		fixed("lastn-vitals-heaviest", "/fhir/Observation/$lastn?patient=Patient/"+heavy.ID+"&category=vital-signs&max=1"),
		// Research access (issue 11): population $stats of the commonest
		// code over every patient, and a search answering 1,000
		// Observations, each for the system client and de-identified for
		// the research client (pseudonyms, shifted dates, suppression).
		fixed("stats-pain", stats),
		{name: "stats-pain-research", next: func(*rand.Rand, []byte) string { return stats }, research: true},
		fixed("search-1000", search1000),
		{name: "search-1000-research", next: func(*rand.Rand, []byte) string { return search1000 }, research: true},
	}
}

// ceiling measures a bare Echo handler returning 1 KB of JSON through a
// net/http server with serve's timeouts, with the read scenario's URLs.
func ceiling(ctx context.Context, client *http.Client, scs []scenario, cfg config) ([]result, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := echo.New()
	body := []byte(`{"resourceType":"Observation","id":"x","status":"final","note":[{"text":"` + strings.Repeat("x", 1024-70) + `"}]}`)
	e.GET("/fhir/Observation/:id", func(c echo.Context) error { return c.Blob(http.StatusOK, "application/fhir+json", body) })
	hs := &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: 5 * time.Minute, IdleTimeout: 90 * time.Second, MaxHeaderBytes: 64 << 10}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	base := "http://" + ln.Addr().String()
	read := scenario{name: "ceiling", next: func(rng *rand.Rand, _ []byte) string {
		return "/fhir/Observation/" + strconv.Itoa(rng.IntN(1000))
	}}
	var out []result
	for _, c := range cfg.conns {
		run(ctx, client, base, "", read, c, cfg.duration/5, cfg.seed)
		out = append(out, run(ctx, client, base, "", read, c, cfg.duration, cfg.seed))
	}
	client.CloseIdleConnections()
	return out, nil
}

type serveProc struct {
	cmd  *exec.Cmd
	base string
	errs *bytes.Buffer
}

func startServe(ctx context.Context, bin, data, audit string) (*serveProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	// Warn level: the per-request log lines are not part of what is
	// measured (operators ship them, but elsewhere).
	cmd := exec.CommandContext(ctx, bin, "serve", "--listen", addr, "--data-dir", data, "--audit", audit, "--log-level", "warn")
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	var errs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &errs, &errs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &serveProc{cmd: cmd, base: "http://" + addr, errs: &errs}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if res, err := http.Get(p.base + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return p, nil
			}
		}
	}
	p.stop()
	return nil, fmt.Errorf("anodyne serve did not become ready:\n%s", errs.String())
}

func (p *serveProc) token(ctx context.Context, bin, client, key string) (string, error) {
	o, err := exec.CommandContext(ctx, bin, "token", "--server", p.base+"/fhir", "--client", client, "--key", key, "--scope", "system/*.rs").Output()
	if err != nil {
		return "", fmt.Errorf("anodyne token: %w", err)
	}
	return strings.TrimSpace(string(o)), nil
}

// cpu is the server process's CPU time so far (user and system), from
// /proc (0 where there is none).
func (p *serveProc) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are
	// the 14th and 15th fields, in clock ticks (100 per second on Linux).
	rest := string(b)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

// settle waits until the server has stored every AuditEvent it
// acknowledged: a request that may return AuditEvents waits for that
// before it is answered (refused here, as the token does not name
// AuditEvent), so that a cell's CPU time includes its audit trail.
func (p *serveProc) settle(ctx context.Context, client *http.Client, token string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/fhir/AuditEvent?_count=1", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("settling the audit trail: %w", err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode == http.StatusServiceUnavailable {
		return fmt.Errorf("settling the audit trail: %s", res.Status)
	}
	return nil
}

func (p *serveProc) stop() error {
	_ = p.cmd.Process.Signal(os.Interrupt)
	err := p.cmd.Wait()
	if err != nil {
		return fmt.Errorf("anodyne serve: %w\n%s", err, p.errs.String())
	}
	return nil
}

// checkAuthOn makes sure the figures are of the default configuration: a
// request without a token must be refused.
func checkAuthOn(ctx context.Context, client *http.Client, base string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/fhir/Patient", nil)
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		return fmt.Errorf("GET /fhir/Patient without a token: %d, want 401 (auth is not on)", res.StatusCode)
	}
	return nil
}

func report(out io.Writer, ceil, rows []result, audit map[string][]result) {
	byConns := map[int]float64{}
	fmt.Fprintf(out, "\n| scenario | conns | req/s | p50 ms | p99 ms | errors | of ceiling | server CPU µs/req |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range ceil {
		byConns[r.conns] = r.rate()
		line(out, r, "1.00")
	}
	for _, r := range rows {
		line(out, r, fmt.Sprintf("%.3f", r.rate()/byConns[r.conns]))
	}
	if off := audit["off"]; len(off) > 0 {
		fmt.Fprintf(out, "\nreads, audit on vs off (auth on both; server CPU per read, audit storage included, and its off/on ratio: the throughput ratio on a saturated server):\n\n| conns | on req/s | off req/s | on/off | on p99 ms | off p99 ms | on CPU µs | of which after the cell | off CPU µs | off/on CPU |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for i, on := range audit["on"] {
			if i < len(off) {
				fmt.Fprintf(out, "| %d | %.0f | %.0f | %.2f | %.2f | %.2f | %.0f | %.0f | %.0f | %.2f |\n", on.conns, on.rate(), off[i].rate(), on.rate()/off[i].rate(),
					ms(quantile(on.lat, .99)), ms(quantile(off[i].lat, .99)), on.cpuPerReq(), float64(on.settleCPU.Microseconds())/float64(max(on.requests, 1)),
					off[i].cpuPerReq(), off[i].cpuPerReq()/on.cpuPerReq())
			}
		}
	}
	for _, r := range rows {
		if r.errors > 0 {
			fmt.Fprintf(out, "\n%s at %d: %d errors, first: %s\n", r.scenario, r.conns, r.errors, r.firstErr)
		}
	}
}

func line(out io.Writer, r result, ofCeiling string) {
	fmt.Fprintf(out, "| %s | %d | %.0f | %.2f | %.2f | %d | %s | %.0f |\n", r.scenario, r.conns, r.rate(), ms(quantile(r.lat, .5)), ms(quantile(r.lat, .99)), r.errors, ofCeiling, r.cpuPerReq())
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
