// Package metrics owns Anodyne's Prometheus metrics: their names, labels
// and buckets, the registry they live in (one per server, never the
// process-global default) and the /metrics handler. The other packages do
// not import Prometheus: they expose small hooks (fhir.Config.OnRequest,
// audit group-commit and token callbacks) and cmd/anodyne connects them
// to the methods here. Storage is measured by wrapping the backend
// (Backend), which keeps the optional storage interfaces reachable through
// storage.As.
//
// Label values are bounded: interactions and resource types come from the
// route table and the R4 type list, statuses are HTTP codes, storage
// operations are the Backend methods, grants are the token endpoint's
// grant types. Nothing from a request's path or query becomes a label.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the set of metrics of one server process.
type Metrics struct {
	reg *prometheus.Registry

	requests     *prometheus.CounterVec
	requestTime  *prometheus.HistogramVec
	storageTime  *prometheus.HistogramVec
	storageErrs  *prometheus.CounterVec
	auditBatch   prometheus.Histogram
	tokens       *prometheus.CounterVec
	exportJobs   *prometheus.CounterVec
	importedRecs *prometheus.CounterVec
}

// latencyBuckets span a cached read (sub-millisecond) to a slow export page.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New builds the metrics in a registry of their own, with the Go runtime
// and process collectors beside them.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anodyne_http_requests_total",
			Help: "HTTP requests by FHIR interaction (or operation), resource type and status code.",
		}, []string{"interaction", "type", "status"}),
		requestTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "anodyne_http_request_duration_seconds",
			Help:    "Time from the request reaching the router to the response being written, by interaction.",
			Buckets: latencyBuckets,
		}, []string{"interaction"}),
		storageTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "anodyne_storage_operation_duration_seconds",
			Help:    "Storage backend calls by operation (commit, read, read_version, history, search, kv_*).",
			Buckets: latencyBuckets,
		}, []string{"op"}),
		storageErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anodyne_storage_operation_errors_total",
			Help: "Storage backend calls that returned an error other than not-found, by operation.",
		}, []string{"op"}),
		auditBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "anodyne_audit_group_commit_events",
			Help:    "AuditEvents stored per group commit (read audits of concurrent requests share one durable write).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anodyne_oauth_tokens_total",
			Help: "Token endpoint answers by grant type and outcome (issued, or the OAuth error code).",
		}, []string{"grant", "outcome"}),
		exportJobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anodyne_export_jobs_total",
			Help: "Bulk Data export jobs that reached a state (accepted, completed, failed, deleted).",
		}, []string{"state"}),
		importedRecs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anodyne_import_resources_total",
			Help: "Resources processed by Bulk import, by outcome (stored, failed).",
		}, []string{"outcome"}),
	}
	m.reg.MustRegister(m.requests, m.requestTime, m.storageTime, m.storageErrs, m.auditBatch, m.tokens, m.exportJobs, m.importedRecs,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is where callers register gauges that read live state (queue
// depths), so that they appear on the same page.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Request records one finished HTTP request. interaction "" (an
// authorization endpoint, an unmatched path) is reported as "other".
func (m *Metrics) Request(interaction, typ string, status int, took time.Duration) {
	if interaction == "" {
		interaction = "other"
	}
	m.requests.WithLabelValues(interaction, typ, strconv.Itoa(status)).Inc()
	m.requestTime.WithLabelValues(interaction).Observe(took.Seconds())
}

// AuditBatch records the size of one audit group commit.
func (m *Metrics) AuditBatch(events int) { m.auditBatch.Observe(float64(events)) }

// Token records one token endpoint answer: outcome is "issued" or the
// OAuth error code.
func (m *Metrics) Token(grant, outcome string) {
	m.tokens.WithLabelValues(grant, outcome).Inc()
}

// ExportJob records an export job reaching state.
func (m *Metrics) ExportJob(state string) { m.exportJobs.WithLabelValues(state).Inc() }

// Imported records resources processed by Bulk import.
func (m *Metrics) Imported(stored, failed int64) {
	m.importedRecs.WithLabelValues("stored").Add(float64(stored))
	m.importedRecs.WithLabelValues("failed").Add(float64(failed))
}

// Gauge registers a gauge whose value is read at scrape time.
func (m *Metrics) Gauge(name, help string, value func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, value))
}
