package fhir_test

import (
	"sync"
	"testing"

	"github.com/anodyne-fhir/anodyne/fhir"
)

// TestOnRequest checks what the metrics hook is told: the interaction of
// the route table row that served the request, the resource type where
// there is one, and the status actually written.
func TestOnRequest(t *testing.T) {
	b := backends()[0].open(t)
	var mu sync.Mutex
	var got []fhir.RequestInfo
	c := newServer(t, b, func(cfg *fhir.Config) {
		cfg.OnRequest = func(ri fhir.RequestInfo) {
			mu.Lock()
			got = append(got, ri)
			mu.Unlock()
		}
	})
	c.do("PUT", "/Patient/p1", `{"resourceType":"Patient","id":"p1"}`).expect(t, 201)
	c.do("GET", "/Patient/p1", "").expect(t, 200)
	c.do("GET", "/Patient/nope", "").expect(t, 404)
	c.do("GET", "/Observation?code=x", "").expect(t, 200)
	c.do("GET", "/metadata", "").expect(t, 200)
	c.do("GET", "/NotAType/1", "").expect(t, 404)
	c.do("POST", "/Patient/$validate", `{"resourceType":"Patient"}`).expect(t, 200)
	want := []fhir.RequestInfo{
		{Interaction: "update", Type: "Patient", Method: "PUT", Status: 201},
		{Interaction: "read", Type: "Patient", Method: "GET", Status: 200},
		{Interaction: "read", Type: "Patient", Method: "GET", Status: 404},
		{Interaction: "search-type", Type: "Observation", Method: "GET", Status: 200},
		{Interaction: "capabilities", Method: "GET", Status: 200},
		{Interaction: "read", Type: "", Method: "GET", Status: 404},
		{Interaction: "$validate", Type: "Patient", Method: "POST", Status: 200},
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("hook saw %d requests, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Interaction != w.Interaction || g.Type != w.Type || g.Method != w.Method || g.Status != w.Status || g.Duration <= 0 {
			t.Errorf("request %d: %+v, want %+v with a duration", i, g, w)
		}
	}
}
