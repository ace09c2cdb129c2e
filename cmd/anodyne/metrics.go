package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth/audit"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/metrics"
	"github.com/anodyne-fhir/anodyne/tracing"
)

// metricsConfig says where /metrics is served. On the main listener it
// needs the admin token as a bearer token when authorization is on (the
// page names clients and volumes, not patients, but it is no one else's
// business), and is open with --auth=off; --metrics-listen adds a listener
// of its own without authentication, for a scraper on a private network
// or loopback.
//
// Tracing is off unless --otlp-endpoint names an OTLP/HTTP collector.
type metricsConfig struct {
	Listen       string
	OTLPEndpoint string
}

func (mc *metricsConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&mc.Listen, "metrics-listen", "", "also serve /metrics, without authentication, on this address (for example 127.0.0.1:9464); empty: only on the main listener, behind the admin token when --auth=on")
	fs.StringVar(&mc.OTLPEndpoint, "otlp-endpoint", "", "send OpenTelemetry traces (a span per request, a child span per storage call) over OTLP/HTTP to this collector URL, e.g. http://127.0.0.1:4318; empty: tracing off")
}

// instrument connects the FHIR server's hooks to m, and to tr when
// tracing is on (tr may be nil).
func instrument(m *metrics.Metrics, tr *tracing.Tracing, fcfg *fhir.Config) {
	fcfg.OnRequest = func(ri fhir.RequestInfo) {
		m.Request(ri.Interaction, ri.Type, ri.Status, ri.Duration)
		if tr != nil && ri.Request != nil {
			tracing.NameRequest(ri.Request.Context(), ri.Method, ri.Interaction, ri.Type)
		}
	}
	fcfg.OnJob = func(kind, state string) {
		if kind == "export" {
			m.ExportJob(state)
		}
	}
}

// auditOptions are the group-commit options that feed m, and registers
// the queue-depth gauge once the writer exists.
func auditOptions(m *metrics.Metrics) []audit.GroupOption {
	return []audit.GroupOption{audit.WithBatchObserver(m.AuditBatch)}
}

func auditGauge(m *metrics.Metrics, g interface{ QueueLen() int }) {
	m.Gauge("anodyne_audit_queue_events", "AuditEvents waiting for the group-commit writer.", func() float64 { return float64(g.QueueLen()) })
}

// mountMetrics serves /metrics on the main router.
func mountMetrics(e *echo.Echo, m *metrics.Metrics, authOn bool, adminToken string) {
	h := m.Handler()
	e.GET("/metrics", func(c echo.Context) error {
		if authOn {
			tok, ok := bearer(c.Request())
			if adminToken == "" || !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(adminToken)) != 1 {
				c.Response().Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
				msg := "/metrics needs the admin token (--admin-token) as a bearer token, or use --metrics-listen"
				if adminToken == "" {
					msg = "/metrics is served here only with --admin-token set; use --metrics-listen for a scraper"
				}
				return c.String(http.StatusUnauthorized, msg+"\n")
			}
		}
		h.ServeHTTP(c.Response(), c.Request())
		return nil
	})
}

func bearer(r *http.Request) (string, bool) {
	const p = "Bearer "
	h := r.Header.Get("Authorization")
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	return h[len(p):], true
}

// serveMetrics runs the --metrics-listen listener until ctx ends.
func serveMetrics(ctx context.Context, addr string, m *metrics.Metrics, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}, nil
}

// startTracing starts the tracer provider when --otlp-endpoint is set;
// nil, a no-op stop and no error when it is not.
func startTracing(ctx context.Context, mc metricsConfig, log *slog.Logger) (*tracing.Tracing, func(), error) {
	if mc.OTLPEndpoint == "" {
		return nil, func() {}, nil
	}
	version := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
	}
	tr, err := tracing.New(ctx, mc.OTLPEndpoint, version)
	if err != nil {
		return nil, nil, err
	}
	log.Info("tracing on", "otlp_endpoint", mc.OTLPEndpoint)
	return tr, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tr.Shutdown(sctx); err != nil {
			log.Warn("flushing traces", "err", err)
		}
	}, nil
}
