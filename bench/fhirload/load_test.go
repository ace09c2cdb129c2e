package main

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	for _, tc := range []struct {
		lat  []time.Duration
		q    float64
		want time.Duration
	}{
		{nil, .5, 0},
		{ms(7), .99, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), .5, 2 * time.Millisecond},  // nearest rank: ceil(0.5*4) = 2nd
		{ms(1, 2, 3, 4), .99, 4 * time.Millisecond}, // ceil(3.96) = 4th
		{ms(hundred...), .99, 99 * time.Millisecond},
		{ms(hundred...), .5, 50 * time.Millisecond},
		{ms(hundred...), 0, 1 * time.Millisecond},
	} {
		if got := quantile(tc.lat, tc.q); got != tc.want {
			t.Errorf("quantile(%v, %v) = %v, want %v", tc.lat, tc.q, got, tc.want)
		}
	}
}

// TestRunPaging drives a pager against a server whose Bundles link to
// the next page: every worker follows the links up to the page limit and
// starts over, errors are counted apart from latencies, and the token is
// sent.
func TestRunPaging(t *testing.T) {
	var mu sync.Mutex
	hits := map[string]int{}
	var srvURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		mu.Lock()
		hits[strconv.Itoa(page)]++
		mu.Unlock()
		if page == 7 {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, `{"resourceType":"Bundle","link":[{"relation":"self","url":"x"},{"relation":"next","url":"%s/b?page=%d"}]}`, srvURL, page+1)
	}))
	defer srv.Close()
	srvURL = srv.URL
	sc := pager("p", func(*rand.Rand) string { return "/b?page=0" }, 3)
	r := run(t.Context(), srv.Client(), srv.URL, "tok", sc, 2, 300*time.Millisecond, 1)
	if r.requests == 0 || r.errors != 0 {
		t.Fatalf("requests %d, errors %d (%s)", r.requests, r.errors, r.firstErr)
	}
	mu.Lock()
	// Pages 0, 1, 2 only (3 pages), about as often each.
	if len(hits) != 3 || hits["0"] == 0 || hits["2"] < hits["0"]-2 {
		t.Errorf("pages requested: %v", hits)
	}
	mu.Unlock()

	bad := pager("bad", func(*rand.Rand) string { return "/b?page=6" }, 5)
	r = run(t.Context(), srv.Client(), srv.URL, "tok", bad, 1, 200*time.Millisecond, 1)
	if r.errors == 0 || r.requests == 0 || r.firstErr == "" {
		t.Errorf("a 500 on page 7: requests %d, errors %d, first %q", r.requests, r.errors, r.firstErr)
	}
	if r = run(t.Context(), srv.Client(), srv.URL, "", sc, 1, 100*time.Millisecond, 1); r.requests != 0 || r.errors == 0 {
		t.Errorf("without a token: %d ok, %d errors", r.requests, r.errors)
	}
}
