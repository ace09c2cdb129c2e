package metrics_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/anodyne-fhir/anodyne/metrics"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// scrape fetches the metrics page over HTTP and parses it as Prometheus does.
func scrape(t *testing.T, m *metrics.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value is the counter value, or the histogram sample count, of the
// series of family name whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
	}
	return 0
}

func TestMetrics(t *testing.T) {
	ctx := context.Background()
	m := metrics.New()
	raw, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := m.Backend(raw)
	defer b.Close()
	if _, ok := storage.As[storage.Describer](b); !ok {
		t.Error("the wrapped backend hides the SQLite backend's Describer")
	}
	if _, ok := storage.As[storage.Reindexer](b); !ok {
		t.Error("the wrapped backend hides the SQLite backend's Reindexer")
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	for i, id := range []string{"a", "b", "c"} {
		if _, err := b.Commit(ctx, storage.Write{Record: storage.Record{Type: "Patient", ID: id, VersionID: 1, LastUpdated: now, Method: "PUT", JSON: []byte(`{"resourceType":"Patient"}`)}}); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
	}
	// A version conflict is an answer, not a storage failure.
	if _, err := b.Commit(ctx, storage.Write{Record: storage.Record{Type: "Patient", ID: "a", VersionID: 1, LastUpdated: now, Method: "PUT", JSON: []byte(`{}`)}}); !errors.Is(err, storage.ErrVersionConflict) {
		t.Fatalf("conflicting commit: %v", err)
	}
	if _, err := b.Read(ctx, "Patient", "missing"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("read of a missing resource: %v", err)
	}
	if _, err := b.Read(ctx, "Patient", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Search(ctx, storage.Query{Types: []string{"Patient"}, Count: -1}); err == nil {
		t.Fatal("a negative count was accepted")
	}
	if err := b.KV().Put(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	m.Request("read", "Patient", 200, 3*time.Millisecond)
	m.Request("read", "Patient", 200, 4*time.Millisecond)
	m.Request("read", "Patient", 404, time.Millisecond)
	m.Request("", "", 302, time.Millisecond)
	m.Token("client_credentials", "issued")
	m.Token("client_credentials", "invalid_client")
	m.AuditBatch(5)
	m.ExportJob("accepted")
	depth := 7.0
	m.Gauge("anodyne_test_depth", "a live value", func() float64 { return depth })

	fams := scrape(t, m)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"anodyne_storage_operation_duration_seconds", map[string]string{"op": "commit"}, 4},
		{"anodyne_storage_operation_errors_total", map[string]string{"op": "commit"}, 0},
		{"anodyne_storage_operation_duration_seconds", map[string]string{"op": "read"}, 2},
		{"anodyne_storage_operation_errors_total", map[string]string{"op": "read"}, 0},
		{"anodyne_storage_operation_errors_total", map[string]string{"op": "search"}, 1},
		{"anodyne_storage_operation_duration_seconds", map[string]string{"op": "kv_put"}, 1},
		{"anodyne_http_requests_total", map[string]string{"interaction": "read", "type": "Patient", "status": "200"}, 2},
		{"anodyne_http_requests_total", map[string]string{"interaction": "read", "type": "Patient", "status": "404"}, 1},
		{"anodyne_http_requests_total", map[string]string{"interaction": "other", "status": "302"}, 1},
		{"anodyne_http_request_duration_seconds", map[string]string{"interaction": "read"}, 3},
		{"anodyne_oauth_tokens_total", map[string]string{"grant": "client_credentials", "outcome": "issued"}, 1},
		{"anodyne_oauth_tokens_total", map[string]string{"grant": "client_credentials", "outcome": "invalid_client"}, 1},
		{"anodyne_audit_group_commit_events", nil, 1},
		{"anodyne_export_jobs_total", map[string]string{"state": "accepted"}, 1},
		{"anodyne_test_depth", nil, 7},
	} {
		if got := value(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("the Go runtime collector is missing")
	}
}
