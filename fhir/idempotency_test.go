package fhir_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestIdempotencyKey: a POST repeated with its Idempotency-Key is answered
// as the first time (same status, Location, ids) without writing again; the
// same key with another request is a 422; requests without a key are
// unaffected. Counts come from searches, not from the answers.
func TestIdempotencyKey(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)

			// create
			body := `{"resourceType":"Patient","name":[{"family":"Idem"}]}`
			first := c.do("POST", "/Patient", body, "Idempotency-Key: create-1").expect(t, http.StatusCreated)
			again := c.do("POST", "/Patient", body, "Idempotency-Key: create-1").expect(t, http.StatusCreated)
			if first.header.Get("Location") == "" || again.header.Get("Location") != first.header.Get("Location") || again.header.Get("ETag") != first.header.Get("ETag") {
				t.Errorf("replayed create: Location %q ETag %q, first %q %q", again.header.Get("Location"), again.header.Get("ETag"), first.header.Get("Location"), first.header.Get("ETag"))
			}
			if get(again.json(t), "id") != get(first.json(t), "id") {
				t.Errorf("replayed create body names another resource")
			}
			if n := countFamily(t, c, "Idem"); n != 1 {
				t.Errorf("%d Idem patients after a replayed create, want 1", n)
			}
			if code := c.do("POST", "/Patient", `{"resourceType":"Patient","name":[{"family":"Other"}]}`, "Idempotency-Key: create-1").expect(t, http.StatusUnprocessableEntity).outcome(t); code != "business-rule" {
				t.Errorf("key reused with another body: code %q", code)
			}
			c.do("POST", "/Patient", body).expect(t, http.StatusCreated)
			if n := countFamily(t, c, "Idem"); n != 2 {
				t.Errorf("%d Idem patients after a create without key, want 2", n)
			}
			c.do("POST", "/Patient", body, "Idempotency-Key: "+strings.Repeat("k", 300)).expect(t, http.StatusBadRequest).outcome(t)

			// conditional create: the replay answers 201 as the first time,
			// where running it again would answer 200 (it matches).
			cond := `{"resourceType":"Patient","identifier":[{"system":"urn:idem","value":"c1"}],"name":[{"family":"IdemCond"}]}`
			c.do("POST", "/Patient", cond, "Idempotency-Key: cond-1", "If-None-Exist: identifier=urn:idem|c1").expect(t, http.StatusCreated)
			c.do("POST", "/Patient", cond, "Idempotency-Key: cond-1", "If-None-Exist: identifier=urn:idem|c1").expect(t, http.StatusCreated)
			c.do("POST", "/Patient", cond, "If-None-Exist: identifier=urn:idem|c1").expect(t, http.StatusOK)

			// batch: the committed entries are answered from their records,
			// the failed one runs again (and fails again).
			batch := bundleJSON("batch",
				`{"resource":{"resourceType":"Patient","name":[{"family":"IdemBatch"}]},"request":{"method":"POST","url":"Patient"}}`,
				`{"resource":{"resourceType":"Patient","gender":"not-a-gender"},"request":{"method":"POST","url":"Patient"}}`,
				`{"resource":{"resourceType":"Patient","name":[{"family":"IdemBatch"}]},"request":{"method":"POST","url":"Patient"}}`,
				`{"request":{"method":"GET","url":"Patient?family=IdemBatch"}}`,
			)
			b1 := entries(c.do("POST", "", batch, "Idempotency-Key: batch-1").expect(t, http.StatusOK).json(t))
			b2 := entries(c.do("POST", "", batch, "Idempotency-Key: batch-1").expect(t, http.StatusOK).json(t))
			for i := range 3 {
				s1, s2 := fmt.Sprint(get(b1[i], "response", "status")), fmt.Sprint(get(b2[i], "response", "status"))
				l1, l2 := fmt.Sprint(get(b1[i], "response", "location")), fmt.Sprint(get(b2[i], "response", "location"))
				if s1 != s2 || l1 != l2 {
					t.Errorf("batch entry %d: first %s %s, replay %s %s", i, s1, l1, s2, l2)
				}
			}
			if !strings.HasPrefix(fmt.Sprint(get(b2[1], "response", "status")), "400") {
				t.Errorf("the invalid entry replayed as %v", get(b2[1], "response", "status"))
			}
			if n := countFamily(t, c, "IdemBatch"); n != 2 {
				t.Errorf("%d IdemBatch patients after a replayed batch, want 2", n)
			}
			if code := c.do("POST", "", strings.Replace(batch, "IdemBatch", "IdemBatch2", 1), "Idempotency-Key: batch-1").expect(t, http.StatusUnprocessableEntity).outcome(t); code != "business-rule" {
				t.Errorf("batch key reused with another body: code %q", code)
			}

			// $import: a copy of a request is a replay; what is stored with
			// the same content gets no new version, and the answer is the
			// first one's. Without a key a repeat is an update (version 2).
			nd := `{"resourceType":"Patient","id":"idem-nd1","name":[{"family":"IdemNd"}]}` + "\n" +
				`{"resourceType":"Patient","id":"idem-nd2","gender":"not-a-gender"}` + "\n" +
				`{"resourceType":"Patient","id":"idem-nd3","name":[{"family":"IdemNd"}]}` + "\n"
			ndjson := "Content-Type: application/fhir+ndjson"
			i1 := c.do("POST", "/$import", nd, ndjson, "Idempotency-Key: nd-1").expect(t, http.StatusOK)
			i2 := c.do("POST", "/$import", nd, ndjson, "Idempotency-Key: nd-1").expect(t, http.StatusOK)
			if string(i1.body) != string(i2.body) {
				t.Errorf("replayed $import answered\n%s\nthe first\n%s", i2.body, i1.body)
			}
			if v := get(c.do("GET", "/Patient/idem-nd3", "").expect(t, http.StatusOK).json(t), "meta", "versionId"); v != "1" {
				t.Errorf("replayed $import: Patient/idem-nd3 at version %v, want 1", v)
			}
			c.do("POST", "/$import", strings.Replace(nd, "IdemNd", "IdemNd2", 1), ndjson, "Idempotency-Key: nd-1").expect(t, http.StatusUnprocessableEntity)
			c.do("POST", "/$import", nd, ndjson).expect(t, http.StatusOK)
			if v := get(c.do("GET", "/Patient/idem-nd3", "").expect(t, http.StatusOK).json(t), "meta", "versionId"); v != "2" {
				t.Errorf("$import without key: Patient/idem-nd3 at version %v, want 2", v)
			}

			// transaction (where the database can run one)
			tx := bundleJSON("transaction",
				`{"fullUrl":"urn:uuid:0b6a5c3e-6a44-4f0e-9c7a-1f6f7d3c2a11","resource":{"resourceType":"Patient","name":[{"family":"IdemTx"}]},"request":{"method":"POST","url":"Patient"}}`,
				`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"pain"},"subject":{"reference":"urn:uuid:0b6a5c3e-6a44-4f0e-9c7a-1f6f7d3c2a11"}},"request":{"method":"POST","url":"Observation"}}`,
			)
			r1 := c.do("POST", "", tx, "Idempotency-Key: tx-1")
			if r1.status == http.StatusNotImplemented {
				return
			}
			t1 := entries(r1.expect(t, http.StatusOK).json(t))
			t2 := entries(c.do("POST", "", tx, "Idempotency-Key: tx-1").expect(t, http.StatusOK).json(t))
			for i := range t1 {
				if l1, l2 := get(t1[i], "response", "location"), get(t2[i], "response", "location"); l1 == nil || l1 != l2 {
					t.Errorf("transaction entry %d: location %v, replay %v", i, l1, l2)
				}
			}
			if n := countFamily(t, c, "IdemTx"); n != 1 {
				t.Errorf("%d IdemTx patients after a replayed transaction, want 1", n)
			}
		})
	}
}

// TestIdempotencyKeyConcurrent: copies of one create sent at once make one
// resource; a copy that finds the first still running is told to retry
// (409 with Retry-After) and, retried, gets the first one's Location.
func TestIdempotencyKeyConcurrent(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			body := `{"resourceType":"Patient","name":[{"family":"IdemRace"}]}`
			const n = 6
			locs := make([]string, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for try := 0; try < 100; try++ {
						r := c.srv.Do(t, "POST", "/Patient", body, "Idempotency-Key: race-1")
						if r.Status == http.StatusConflict && r.Header.Get("Retry-After") != "" {
							time.Sleep(20 * time.Millisecond)
							continue
						}
						if r.Status != http.StatusCreated {
							t.Errorf("copy %d: status %d: %s", i, r.Status, r.Body)
						}
						locs[i] = r.Header.Get("Location")
						return
					}
					t.Errorf("copy %d: still refused after 100 tries", i)
				}()
			}
			wg.Wait()
			for i := range locs {
				if locs[i] == "" || locs[i] != locs[0] {
					t.Errorf("copy %d: Location %q, copy 0 %q", i, locs[i], locs[0])
				}
			}
			if got := countFamily(t, c, "IdemRace"); got != 1 {
				t.Errorf("%d IdemRace patients from %d copies of one request, want 1", got, n)
			}
		})
	}
}
