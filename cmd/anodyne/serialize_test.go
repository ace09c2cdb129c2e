package main

import (
	"fmt"
	"net"
	"net/http"
	"testing"
)

// TestServeSerialize checks that --serialize reaches the server: with
// "store" (the default) each remote-monitoring write takes the patient's
// turn as a lease in the store (a PutIfAbsent, then its release), with
// "process" it takes none. The lease traffic is read from the storage
// metrics, the way an operator would see it.
func TestServeSerialize(t *testing.T) {
	const writes = 4
	putIfAbsent := map[string]float64{}
	for _, mode := range []string{"", "store", "process"} {
		t.Run("serialize="+mode, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			metricsAddr := ln.Addr().String()
			ln.Close()
			args := []string{"--auth=off", "--audit=off", "--data-dir", t.TempDir(), "--metrics-listen", metricsAddr}
			if mode != "" {
				args = append(args, "--serialize", mode)
			}
			srv := startServe(t, args...)
			if res, body := call(t, "PUT", srv.base+"/fhir/Patient/s1", "", nil, map[string]any{"resourceType": "Patient", "id": "s1"}); res.StatusCode != http.StatusCreated {
				t.Fatalf("PUT Patient: %d %v", res.StatusCode, body)
			}
			count := func() float64 {
				status, m := scrapeMetrics(t, "http://"+metricsAddr+"/metrics", "")
				if status != http.StatusOK {
					t.Fatalf("metrics: %d", status)
				}
				return m[`anodyne_storage_operation_duration_seconds{op=kv_put_if_absent}`]
			}
			before := count()
			for i := range writes {
				hr := map[string]any{
					"resourceType": "Observation", "status": "final",
					"category":          []any{map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}}}},
					"code":              map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "8867-4"}}},
					"subject":           map[string]any{"reference": "Patient/s1"},
					"effectiveDateTime": fmt.Sprintf("2026-12-01T0%d:00:00Z", i),
					"valueQuantity":     map[string]any{"value": 70 + i, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
				}
				if res, body := call(t, "POST", srv.base+"/fhir/Observation", "", nil, hr); res.StatusCode != http.StatusCreated {
					t.Fatalf("POST heart rate: %d %v", res.StatusCode, body)
				}
			}
			putIfAbsent[mode] = count() - before
			t.Logf("kv PutIfAbsent during %d writes: %v", writes, putIfAbsent[mode])
		})
	}
	// Each write takes the lease at least once; other KV traffic of a
	// write is the same in both modes.
	if d := putIfAbsent[""] - putIfAbsent["process"]; d < writes {
		t.Errorf("default: %v lease takes, process: %v; want at least %d more by default", putIfAbsent[""], putIfAbsent["process"], writes)
	}
	if putIfAbsent["store"] != putIfAbsent[""] {
		t.Errorf("--serialize store: %v lease takes, default %v; want the same", putIfAbsent["store"], putIfAbsent[""])
	}
}
