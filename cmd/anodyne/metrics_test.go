package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeMetrics GETs a metrics page and returns the value of every series
// as "name{label="v",...}" (labels sorted) -> value; counters and gauges
// by value, histograms by sample count.
func scrapeMetrics(t *testing.T, u, token string) (int, map[string]float64) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, res.Body)
		return res.StatusCode, nil
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			key := name + "{" + strings.Join(ls, ",") + "}"
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return res.StatusCode, out
}

// TestServeMetrics runs the default configuration (auth and audit on, a
// real backend-services token), does a known workload and reads /metrics
// as a scraper would: behind the admin token on the main listener, open
// on --metrics-listen.
func TestServeMetrics(t *testing.T) {
	dir := t.TempDir()
	key, jwks := es384(t)
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, "clients", "add", "--data-dir", dir, "--id", "etl", "--type", "confidential-asymmetric", "--jwks-file", jwksFile, "--scope", "system/*.cruds")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ln.Addr().String()
	ln.Close()
	const admin = "admin-token-for-the-metrics-test-0123456789"
	srv := startServe(t, "--data-dir", dir, "--admin-token", admin, "--metrics-listen", metricsAddr)
	tok := backendToken(t, srv.base, "etl", key, "system/*.cruds")

	const reads = 3
	if res, body := call(t, "PUT", srv.base+"/fhir/Patient/m1", tok, nil, map[string]any{"resourceType": "Patient", "id": "m1"}); res.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d %v", res.StatusCode, body)
	}
	for i := 0; i < reads; i++ {
		if res, _ := call(t, "GET", srv.base+"/fhir/Patient/m1", tok, nil, nil); res.StatusCode != http.StatusOK {
			t.Fatalf("read: %d", res.StatusCode)
		}
	}
	if res, _ := call(t, "GET", srv.base+"/fhir/Patient/absent", tok, nil, nil); res.StatusCode != http.StatusNotFound {
		t.Fatalf("read of a missing Patient: %d", res.StatusCode)
	}
	if res, _ := call(t, "GET", srv.base+"/fhir/Patient", "", nil, nil); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("search without a token: %d", res.StatusCode)
	}

	for _, c := range []struct{ token string }{{""}, {"wrong-" + admin}} {
		if status, _ := scrapeMetrics(t, srv.base+"/metrics", c.token); status != http.StatusUnauthorized {
			t.Errorf("/metrics with token %q: %d, want 401", c.token, status)
		}
	}
	// The audit writer answers before the request returns, so every count
	// is final once the responses are in; the separate listener serves the
	// same registry without a token.
	var byListener [2]map[string]float64
	var status int
	status, byListener[0] = scrapeMetrics(t, srv.base+"/metrics", admin)
	if status != http.StatusOK {
		t.Fatalf("/metrics with the admin token: %d", status)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, byListener[1] = scrapeMetrics(t, "http://"+metricsAddr+"/metrics", "")
		if status == http.StatusOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if status != http.StatusOK {
		t.Fatalf("--metrics-listen: %d", status)
	}
	for i, got := range byListener {
		for _, c := range []struct {
			series string
			want   float64
		}{
			{`anodyne_http_requests_total{interaction=read,status=200,type=Patient}`, reads},
			{`anodyne_http_requests_total{interaction=read,status=404,type=Patient}`, 1},
			{`anodyne_http_requests_total{interaction=update,status=201,type=Patient}`, 1},
			{`anodyne_http_requests_total{interaction=search-type,status=401,type=Patient}`, 1},
			{`anodyne_oauth_tokens_total{grant=client_credentials,outcome=issued}`, 1},
			{`anodyne_http_request_duration_seconds{interaction=read}`, reads + 1},
		} {
			if got[c.series] != c.want {
				t.Errorf("listener %d: %s = %v, want %v", i, c.series, got[c.series], c.want)
			}
		}
		// Every FHIR request of the workload was audited: the group
		// commits together hold at least one event per request.
		if n := got[`anodyne_audit_group_commit_events{}`]; n < 1 {
			t.Errorf("listener %d: no audit group commit recorded (%v)", i, n)
		}
		if got[`anodyne_storage_operation_duration_seconds{op=commit}`] < 1 || got[`anodyne_storage_operation_duration_seconds{op=read}`] < reads {
			t.Errorf("listener %d: storage operations not counted: commit %v, read %v", i,
				got[`anodyne_storage_operation_duration_seconds{op=commit}`], got[`anodyne_storage_operation_duration_seconds{op=read}`])
		}
		if _, ok := got[`anodyne_audit_queue_events{}`]; !ok {
			t.Errorf("listener %d: the audit queue gauge is missing", i)
		}
	}
}
