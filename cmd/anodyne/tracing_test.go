package main

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP trace endpoint that keeps what it gets.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil || r.URL.Path != "/v1/traces" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var req coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			o.spans = append(o.spans, ss.Spans...)
		}
	}
	o.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

// TestServeTracing sends a request carrying a W3C traceparent through a
// server exporting to an in-process OTLP receiver, and finds its server
// span (named after the FHIR interaction) continuing the caller's trace,
// with storage spans as its children.
func TestServeTracing(t *testing.T) {
	rcv := &otlpReceiver{}
	collector := httptest.NewServer(rcv)
	defer collector.Close()
	srv := startServe(t, "--auth=off", "--data-dir", t.TempDir(), "--otlp-endpoint", collector.URL)
	if code, out := fhirCall(t, "PUT", srv.base+"/fhir/Patient/t1", `{"resourceType":"Patient","id":"t1"}`); code != http.StatusCreated {
		t.Fatalf("PUT: %d %v", code, out)
	}
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest("GET", srv.base+"/fhir/Patient/t1", nil)
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET: %d", res.StatusCode)
	}
	srv.stop() // flushes the batched spans

	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	var server *tracepb.Span
	for _, s := range rcv.spans {
		if hex.EncodeToString(s.TraceId) == traceID && s.Kind == tracepb.Span_SPAN_KIND_SERVER {
			server = s
		}
	}
	if server == nil {
		t.Fatalf("no server span in trace %s among %d spans", traceID, len(rcv.spans))
	}
	if server.Name != "GET read Patient" {
		t.Errorf("server span named %q, want %q", server.Name, "GET read Patient")
	}
	if hex.EncodeToString(server.ParentSpanId) != "00f067aa0ba902b7" {
		t.Errorf("server span's parent %x, want the caller's 00f067aa0ba902b7", server.ParentSpanId)
	}
	reads := 0
	for _, s := range rcv.spans {
		if string(s.ParentSpanId) == string(server.SpanId) && s.Name == "storage.read" {
			reads++
		}
	}
	if reads == 0 {
		var names []string
		for _, s := range rcv.spans {
			names = append(names, s.Name)
		}
		t.Errorf("no storage.read span under the request's span; spans: %v", names)
	}
}
