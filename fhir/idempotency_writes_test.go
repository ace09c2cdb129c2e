package fhir_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestIdempotencyKeyInstanceWrites: update, patch, delete and their
// conditional forms, over REST and as batch entries, honour
// Idempotency-Key: a copy of a request is answered as the first time even
// where running it again would answer otherwise (a 412 under If-Match, a
// 200 where the first was a 201, a second delete), and writes nothing.
// Versions come from reads and histories, not from the answers.
func TestIdempotencyKeyInstanceWrites(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			pat := func(id, family string) string {
				return `{"resourceType":"Patient","id":"` + id + `","name":[{"family":"` + family + `"}]}`
			}

			// update-as-create, then a plain update in between: the copy
			// still answers 201 version 1 and stores nothing.
			first := c.do("PUT", "/Patient/idem-u1", pat("idem-u1", "A"), "Idempotency-Key: put-1").expect(t, http.StatusCreated)
			c.do("PUT", "/Patient/idem-u1", pat("idem-u1", "B")).expect(t, http.StatusOK)
			again := c.do("PUT", "/Patient/idem-u1", pat("idem-u1", "A"), "Idempotency-Key: put-1").expect(t, http.StatusCreated)
			sameAnswer(t, "replayed update", first, again)
			if e := first.header.Get("ETag"); e != `W/"1"` {
				t.Errorf("first update ETag %q, want W/\"1\"", e)
			}
			if v, fam := current(t, c, "/Patient/idem-u1"); v != "2" || fam != "B" {
				t.Errorf("after a replayed update: version %s family %s, want 2 B", v, fam)
			}
			if n := versions(t, c, "/Patient/idem-u1"); n != 2 {
				t.Errorf("%d versions after a replayed update, want 2", n)
			}
			// The key belongs to that request: another body, another
			// resource or another If-Match is a 422.
			for _, r := range []response{
				c.do("PUT", "/Patient/idem-u1", pat("idem-u1", "C"), "Idempotency-Key: put-1"),
				c.do("PUT", "/Patient/idem-u2", pat("idem-u2", "A"), "Idempotency-Key: put-1"),
				c.do("PUT", "/Patient/idem-u1", pat("idem-u1", "A"), "Idempotency-Key: put-1", `If-Match: W/"2"`),
			} {
				if code := r.expect(t, http.StatusUnprocessableEntity).outcome(t); code != "business-rule" {
					t.Errorf("key reused for another update: code %q", code)
				}
			}

			// update under If-Match: run again it would be a 412.
			c.do("PUT", "/Patient/idem-u1", pat("idem-u1", "D"), "Idempotency-Key: put-2", `If-Match: W/"2"`).expect(t, http.StatusOK)
			r := c.do("PUT", "/Patient/idem-u1", pat("idem-u1", "D"), "Idempotency-Key: put-2", `If-Match: W/"2"`).expect(t, http.StatusOK)
			if e := r.header.Get("ETag"); e != `W/"3"` {
				t.Errorf("replayed If-Match update ETag %q, want W/\"3\"", e)
			}
			c.do("PUT", "/Patient/idem-u1", pat("idem-u1", "D"), `If-Match: W/"2"`).expect(t, http.StatusPreconditionFailed)

			// patch under If-Match, with a different patch in between.
			patch := `[{"op":"replace","path":"/name/0/family","value":"P"}]`
			jp := "Content-Type: application/json-patch+json"
			p1 := c.do("PATCH", "/Patient/idem-u1", patch, jp, `If-Match: W/"3"`, "Idempotency-Key: patch-1").expect(t, http.StatusOK)
			c.do("PATCH", "/Patient/idem-u1", `[{"op":"replace","path":"/name/0/family","value":"Q"}]`, jp).expect(t, http.StatusOK)
			p2 := c.do("PATCH", "/Patient/idem-u1", patch, jp, `If-Match: W/"3"`, "Idempotency-Key: patch-1").expect(t, http.StatusOK)
			sameAnswer(t, "replayed patch", p1, p2)
			if fam := get(p2.json(t), "name", 0, "family"); fam != "P" {
				t.Errorf("replayed patch answers family %v, want the first answer's P", fam)
			}
			if v, fam := current(t, c, "/Patient/idem-u1"); v != "5" || fam != "Q" {
				t.Errorf("after a replayed patch: version %s family %s, want 5 Q", v, fam)
			}

			// delete, the resource written again, the copy of the delete:
			// 204 with the delete's ETag, and the resource is still there.
			d1 := c.do("DELETE", "/Patient/idem-u1", "", "Idempotency-Key: del-1").expect(t, http.StatusNoContent)
			c.do("PUT", "/Patient/idem-u1", pat("idem-u1", "R")).expect(t, http.StatusCreated)
			d2 := c.do("DELETE", "/Patient/idem-u1", "", "Idempotency-Key: del-1").expect(t, http.StatusNoContent)
			if d1.header.Get("ETag") != `W/"6"` || d2.header.Get("ETag") != d1.header.Get("ETag") {
				t.Errorf("delete ETag %q, replay %q, want W/\"6\" twice", d1.header.Get("ETag"), d2.header.Get("ETag"))
			}
			if v, fam := current(t, c, "/Patient/idem-u1"); v != "7" || fam != "R" {
				t.Errorf("after a replayed delete: version %s family %s, want 7 R", v, fam)
			}

			// conditional update that creates: run again it would update
			// (200, version 2); the copy answers 201 version 1.
			cond := `{"resourceType":"Patient","identifier":[{"system":"urn:idem","value":"u9"}],"name":[{"family":"IdemCondPut"}]}`
			cu1 := c.do("PUT", "/Patient?identifier=urn:idem|u9", cond, "Idempotency-Key: cput-1").expect(t, http.StatusCreated)
			cu2 := c.do("PUT", "/Patient?identifier=urn:idem|u9", cond, "Idempotency-Key: cput-1").expect(t, http.StatusCreated)
			sameAnswer(t, "replayed conditional update", cu1, cu2)
			loc := strings.TrimPrefix(strings.Split(cu1.header.Get("Location"), "/_history/")[0], c.base)
			if n := versions(t, c, loc); n != 1 {
				t.Errorf("%d versions of %s after a replayed conditional update, want 1", n, loc)
			}
			c.do("PUT", "/Patient?identifier=urn:idem|u8", cond, "Idempotency-Key: cput-1").expect(t, http.StatusUnprocessableEntity)

			// conditional delete, recreated, copy of the delete.
			c.do("DELETE", "/Patient?identifier=urn:idem|u9", "", "Idempotency-Key: cdel-1").expect(t, http.StatusNoContent)
			c.do("POST", "/Patient", cond).expect(t, http.StatusCreated)
			c.do("DELETE", "/Patient?identifier=urn:idem|u9", "", "Idempotency-Key: cdel-1").expect(t, http.StatusNoContent)
			if n := countFamily(t, c, "IdemCondPut"); n != 1 {
				t.Errorf("%d IdemCondPut patients after a replayed conditional delete, want 1", n)
			}
		})
	}
}

// TestIdempotencyKeyBatchInstanceWrites: the update, patch and delete
// entries of a batch are recorded each in its own Commit; a copy of the
// batch answers them from their records (where running them again would
// give a 412, another version, or a second delete) and writes nothing.
func TestIdempotencyKeyBatchInstanceWrites(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			for _, id := range []string{"idem-b1", "idem-b2", "idem-b3"} {
				c.do("PUT", "/Patient/"+id, `{"resourceType":"Patient","id":"`+id+`","name":[{"family":"Batch"}]}`).expect(t, http.StatusCreated)
			}
			patch := base64.StdEncoding.EncodeToString([]byte(`[{"op":"replace","path":"/name/0/family","value":"Patched"}]`))
			batch := bundleJSON("batch",
				`{"resource":{"resourceType":"Patient","id":"idem-b1","name":[{"family":"Updated"}]},"request":{"method":"PUT","url":"Patient/idem-b1","ifMatch":"W/\"1\""}}`,
				`{"resource":{"resourceType":"Binary","contentType":"application/json-patch+json","data":"`+patch+`"},"request":{"method":"PATCH","url":"Patient/idem-b2"}}`,
				`{"request":{"method":"DELETE","url":"Patient/idem-b3"}}`,
				`{"resource":{"resourceType":"Patient","id":"idem-b4","name":[{"family":"New"}]},"request":{"method":"PUT","url":"Patient/idem-b4"}}`,
			)
			b1 := entries(c.do("POST", "", batch, "Idempotency-Key: batch-u1").expect(t, http.StatusOK).json(t))
			want := []string{"200", "200", "204", "201"}
			for i, w := range want {
				if s := fmt.Sprint(get(b1[i], "response", "status")); !strings.HasPrefix(s, w) {
					t.Fatalf("batch entry %d: status %s, want %s: %v", i, s, w, b1[i])
				}
			}
			// Other writers change every resource before the copy arrives.
			c.do("PUT", "/Patient/idem-b1", `{"resourceType":"Patient","id":"idem-b1","name":[{"family":"Other"}]}`).expect(t, http.StatusOK)
			c.do("PUT", "/Patient/idem-b2", `{"resourceType":"Patient","id":"idem-b2","name":[{"family":"Other"}]}`).expect(t, http.StatusOK)
			c.do("PUT", "/Patient/idem-b3", `{"resourceType":"Patient","id":"idem-b3","name":[{"family":"Other"}]}`).expect(t, http.StatusCreated)
			b2 := entries(c.do("POST", "", batch, "Idempotency-Key: batch-u1").expect(t, http.StatusOK).json(t))
			for i := range want {
				for _, f := range []string{"status", "etag", "location"} {
					if v1, v2 := get(b1[i], "response", f), get(b2[i], "response", f); fmt.Sprint(v1) != fmt.Sprint(v2) {
						t.Errorf("batch entry %d: %s %v, replay %v", i, f, v1, v2)
					}
				}
			}
			for id, wantV := range map[string]string{"idem-b1": "3", "idem-b2": "3", "idem-b3": "3", "idem-b4": "1"} {
				if v, _ := current(t, c, "/Patient/"+id); v != wantV {
					t.Errorf("Patient/%s at version %s after the replayed batch, want %s", id, v, wantV)
				}
			}
		})
	}
}

// TestIdempotencyKeyUpdateRace: copies of one keyed update sent at once,
// racing unkeyed updates of the same resource, store the keyed content
// exactly once; every copy gets the one answer (a copy that finds another
// running is told to retry, 409 with Retry-After), and every unkeyed update
// is kept.
func TestIdempotencyKeyUpdateRace(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			body := func(family string) string {
				return `{"resourceType":"Patient","id":"idem-race","name":[{"family":"` + family + `"}]}`
			}
			c.do("PUT", "/Patient/idem-race", body("Start")).expect(t, http.StatusCreated)
			const copies, plain = 4, 4
			etags := make([]string, copies)
			var wg sync.WaitGroup
			for i := range copies {
				wg.Go(func() {
					for try := 0; try < 200; try++ {
						r := c.srv.Do(t, "PUT", "/Patient/idem-race", body("Keyed"), "Idempotency-Key: race-put")
						if r.Status == http.StatusConflict && r.Header.Get("Retry-After") != "" {
							time.Sleep(20 * time.Millisecond)
							continue
						}
						if r.Status != http.StatusOK {
							t.Errorf("keyed copy %d: status %d: %s", i, r.Status, r.Body)
						}
						etags[i] = r.Header.Get("ETag")
						return
					}
					t.Errorf("keyed copy %d: still refused after 200 tries", i)
				})
			}
			for i := range plain {
				wg.Go(func() {
					if r := c.srv.Do(t, "PUT", "/Patient/idem-race", body(fmt.Sprintf("Plain%d", i))); r.Status != http.StatusOK {
						t.Errorf("unkeyed update %d: status %d: %s", i, r.Status, r.Body)
					}
				})
			}
			wg.Wait()
			for i := range etags {
				if etags[i] == "" || etags[i] != etags[0] {
					t.Errorf("keyed copy %d: ETag %q, copy 0 %q", i, etags[i], etags[0])
				}
			}
			h := c.do("GET", "/Patient/idem-race/_history?_count=100", "").expect(t, http.StatusOK).json(t)
			families := map[string]int{}
			for _, e := range entries(h) {
				families[fmt.Sprint(get(e, "resource", "name", 0, "family"))]++
			}
			if n := len(entries(h)); n != 2+plain {
				t.Errorf("%d versions, want %d (start, one keyed, %d unkeyed): %v", n, 2+plain, plain, families)
			}
			if families["Keyed"] != 1 {
				t.Errorf("the keyed update stored %d times, want once: %v", families["Keyed"], families)
			}
			for i := range plain {
				if families[fmt.Sprintf("Plain%d", i)] != 1 {
					t.Errorf("unkeyed update %d stored %d times: %v", i, families[fmt.Sprintf("Plain%d", i)], families)
				}
			}
			if r := c.do("PUT", "/Patient/idem-race", body("Keyed"), "Idempotency-Key: race-put").expect(t, http.StatusOK); r.header.Get("ETag") != etags[0] {
				t.Errorf("later copy: ETag %q, want %q", r.header.Get("ETag"), etags[0])
			}
		})
	}
}

// sameAnswer fails unless two answers to copies of a write agree on
// status, Location and ETag.
func sameAnswer(t *testing.T, what string, a, b response) {
	t.Helper()
	for _, h := range []string{"Location", "ETag"} {
		if a.header.Get(h) != b.header.Get(h) {
			t.Errorf("%s: %s %q, first %q", what, h, b.header.Get(h), a.header.Get(h))
		}
	}
	if a.status != b.status {
		t.Errorf("%s: status %d, first %d", what, b.status, a.status)
	}
}

// current is the version and first family name of the resource at path.
func current(t *testing.T, c *client, path string) (version, family string) {
	t.Helper()
	m := c.do("GET", path, "").expect(t, http.StatusOK).json(t)
	return fmt.Sprint(get(m, "meta", "versionId")), fmt.Sprint(get(m, "name", 0, "family"))
}

// versions is the number of versions in the history of the resource at path.
func versions(t *testing.T, c *client, path string) int {
	t.Helper()
	return len(entries(c.do("GET", path+"/_history?_count=100", "").expect(t, http.StatusOK).json(t)))
}
