// Package tracing owns Anodyne's OpenTelemetry tracing: the tracer
// provider and its OTLP/HTTP exporter (off unless an endpoint is given),
// the HTTP server span around every request, and a storage.Backend
// wrapper that adds a child span per storage call. The provider is passed
// explicitly, never installed as the process-global one, so that two
// servers in one process (tests) do not share it.
//
// It must not know FHIR: cmd/anodyne names the HTTP span after the FHIR
// interaction through fhir.Config.OnRequest.
package tracing

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracing is a running tracer provider.
type Tracing struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
}

// New exports spans over OTLP/HTTP to endpoint, a URL such as
// http://collector:4318 (the path /v1/traces is added unless the URL has
// a path). Spans are batched; Shutdown flushes them.
func New(ctx context.Context, endpoint, version string) (*Tracing, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("tracing: OTLP endpoint %q is not an http(s) URL", endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u.String()))
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter for %s: %w", endpoint, err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName("anodyne"), semconv.ServiceVersion(version)))
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(2*time.Second)), sdktrace.WithResource(res))
	return &Tracing{tp: tp, tracer: tp.Tracer("github.com/anodyne-fhir/anodyne")}, nil
}

// Shutdown flushes the spans still batched and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if err := t.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: shutdown: %w", err)
	}
	return nil
}

// Handler wraps h with the HTTP server span of each request, continuing a
// trace the caller propagated with W3C traceparent.
func (t *Tracing) Handler(h http.Handler) http.Handler {
	return otelhttp.NewHandler(h, "http",
		otelhttp.WithTracerProvider(t.tp),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }))
}

// NameRequest renames the request's server span after what it did, such
// as "GET read Patient", and records the FHIR interaction and type.
func NameRequest(ctx context.Context, method, interaction, typ string) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	name := method
	if interaction != "" {
		name += " " + interaction
	}
	if typ != "" {
		name += " " + typ
	}
	span.SetName(name)
	span.SetAttributes(attribute.String("fhir.interaction", interaction), attribute.String("fhir.resource_type", typ))
}

// span starts a storage span; end records err.
func (t *Tracing) span(ctx context.Context, op string, attrs ...attribute.KeyValue) (context.Context, func(error)) {
	ctx, s := t.tracer.Start(ctx, "storage."+op, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	return ctx, func(err error) {
		if err != nil {
			s.RecordError(err)
			s.SetStatus(codes.Error, err.Error())
		}
		s.End()
	}
}
