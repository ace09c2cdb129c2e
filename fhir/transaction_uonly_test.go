package fhir_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func patchEntry(url, ops string) string {
	return fmt.Sprintf(`{"resource":{"resourceType":"Binary","contentType":"application/json-patch+json","data":%q},"request":{"method":"PATCH","url":%q}}`,
		base64.StdEncoding.EncodeToString([]byte(ops)), url)
}

func putEntry(url, resource string) string {
	return fmt.Sprintf(`{"resource":%s,"request":{"method":"PUT","url":%q}}`, resource, url)
}

// versionOf is the current versionId of a resource, read by an unrestricted client.
func versionOf(t *testing.T, admin *client, path string) string {
	t.Helper()
	return fmt.Sprint(get(admin.do("GET", path, "").expect(t, http.StatusOK).json(t), "meta", "versionId"))
}

// TestTransactionUpdateOnly: a caller who may update patient pa's
// Observations but not read them (patient/Observation.u) learns nothing
// of their content through transaction entries: PATCH test operations are
// refused whatever their outcome, a failing patch says nothing of why,
// and neither a PATCH nor a PUT entry returns the resource, even with
// Prefer: return=representation. The REST PUT answers the same way.
func TestTransactionUpdateOnly(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			b := be.open(t)
			admin, c := twoPatients(t, b, "patient/Observation.u")
			rep := "Prefer: return=representation"
			tx := func(entry string) response {
				return c.do("POST", "", bundleJSON("transaction", entry), rep)
			}

			// test operations: refused before evaluation, same answer
			// whether the test would pass or fail, nothing written.
			pass := tx(patchEntry("Observation/o-pa", `[{"op":"test","path":"/status","value":"final"},{"op":"replace","path":"/status","value":"amended"}]`))
			fail := tx(patchEntry("Observation/o-pa", `[{"op":"test","path":"/status","value":"preliminary"},{"op":"replace","path":"/status","value":"amended"}]`))
			if pass.status != http.StatusForbidden || pass.outcome(t) != "forbidden" {
				t.Fatalf("test op that would pass: %d %s; want 403 forbidden", pass.status, pass.body)
			}
			if string(pass.body) != string(fail.body) || pass.status != fail.status {
				t.Errorf("test ops answer differently by outcome:\n pass %d %s\n fail %d %s", pass.status, pass.body, fail.status, fail.body)
			}
			if v := versionOf(t, admin, "/Observation/o-pa"); v != "1" {
				t.Errorf("a refused test-op transaction wrote version %s", v)
			}

			// A patch that cannot be applied, or whose result is invalid:
			// 422 with no detail (the detail would quote the stored content).
			for _, ops := range []string{
				`[{"op":"remove","path":"/valueString"}]`,
				`[{"op":"replace","path":"/status","value":"not-a-status"}]`,
			} {
				r := tx(patchEntry("Observation/o-pa", ops))
				if r.status != http.StatusUnprocessableEntity {
					t.Errorf("%s: %d %s; want 422", ops, r.status, r.body)
					continue
				}
				r.outcome(t)
				for _, leak := range []string{"valueString", "not-a-status", "valueInteger", "final", "pain", "Patient/pa"} {
					if strings.Contains(string(r.body), leak) {
						t.Errorf("%s: the error names %q: %s", ops, leak, r.body)
					}
				}
			}

			// An allowed patch: written, and the entry carries no resource.
			r := tx(patchEntry("Observation/o-pa", `[{"op":"replace","path":"/status","value":"amended"}]`)).expect(t, http.StatusOK)
			noResource(t, "PATCH entry", r)
			if v := versionOf(t, admin, "/Observation/o-pa"); v != "2" {
				t.Errorf("after the patch entry: version %s, want 2", v)
			}

			// A PUT entry and a REST PUT: written, no resource returned.
			r = tx(putEntry("Observation/o-pa", obsFor("o-pa", "pa"))).expect(t, http.StatusOK)
			noResource(t, "PUT entry", r)
			if v := versionOf(t, admin, "/Observation/o-pa"); v != "3" {
				t.Errorf("after the PUT entry: version %s, want 3", v)
			}
			put := c.do("PUT", "/Observation/o-pa", strings.Replace(obsFor("o-pa", "pa"), `"valueInteger":3`, `"valueInteger":4`, 1), rep).expect(t, http.StatusOK)
			if len(put.body) != 0 || put.header.Get("ETag") != `W/"4"` {
				t.Errorf("REST PUT by a u-only caller: body %q, ETag %q; want no body and W/\"4\"", put.body, put.header.Get("ETag"))
			}
			// A batch PUT entry takes the REST path: no resource either.
			bt := c.do("POST", "", bundleJSON("batch", putEntry("Observation/o-pa", obsFor("o-pa", "pa"))), rep).expect(t, http.StatusOK)
			noResource(t, "batch PUT entry", bt)

			// With read access the representation is returned as before.
			_, rw := twoPatients(t, be.open(t), "patient/Observation.ru")
			full := rw.do("POST", "", bundleJSON("transaction", putEntry("Observation/o-pa", obsFor("o-pa", "pa"))), rep).expect(t, http.StatusOK).json(t)
			if get(entries(full)[0], "resource", "id") != "o-pa" {
				t.Errorf("PUT entry with r: no resource in %v", full)
			}
		})
	}
}

func noResource(t *testing.T, what string, r response) {
	t.Helper()
	b := r.json(t)
	es := entries(b)
	if len(es) != 1 {
		t.Fatalf("%s: %d entries: %s", what, len(es), r.body)
	}
	if get(es[0], "resource") != nil || strings.Contains(string(r.body), "valueInteger") {
		t.Errorf("%s returned the resource to a u-only caller: %s", what, r.body)
	}
	if st := fmt.Sprint(get(es[0], "response", "status")); !strings.HasPrefix(st, "200") {
		t.Errorf("%s: entry status %s, want 200", what, st)
	}
}

// TestTransactionPatchDeletedOutsideGrant: a PATCH entry on another
// patient's deleted resource answers exactly as one on another patient's
// live resource (403, same OperationOutcome), never 410 "deleted": the
// answer does not tell which of another patient's ids once existed and
// were deleted. (A never-written id is 404 on any path.)
func TestTransactionPatchDeletedOutsideGrant(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			b := be.open(t)
			admin, c := twoPatients(t, b, "patient/Observation.u")
			admin.do("PUT", "/Observation/gone-pb", obsFor("gone-pb", "pb")).expect(t, http.StatusCreated)
			admin.do("DELETE", "/Observation/gone-pb", "").expect(t, http.StatusNoContent)
			ops := `[{"op":"replace","path":"/status","value":"amended"}]`
			for _, kind := range []string{"transaction", "batch"} {
				live := c.do("POST", "", bundleJSON(kind, patchEntry("Observation/o-pb", ops)))
				gone := c.do("POST", "", bundleJSON(kind, patchEntry("Observation/gone-pb", ops)))
				// The Bundles differ by id and time; their entries must not.
				l, g := string(live.body), string(gone.body)
				if kind == "batch" {
					le, _ := json.Marshal(entries(live.json(t)))
					ge, _ := json.Marshal(entries(gone.json(t)))
					l, g = string(le), string(ge)
				}
				l = strings.ReplaceAll(l, "o-pb", "ID")
				g = strings.ReplaceAll(g, "gone-pb", "ID")
				if live.status != gone.status || l != g {
					t.Errorf("%s: live outside the grant %d %s\n deleted outside the grant %d %s", kind, live.status, live.body, gone.status, gone.body)
				}
				if strings.Contains(g, "deleted") || strings.Contains(g, "410") || strings.Contains(g, "version") {
					t.Errorf("%s: the answer reveals the deletion: %s", kind, gone.body)
				}
				if kind == "transaction" && gone.status != http.StatusForbidden {
					t.Errorf("transaction PATCH on a deleted resource outside the grant: %d, want 403", gone.status)
				}
			}
			// The caller's own deleted resource is 410, as on REST.
			admin.do("PUT", "/Observation/gone-pa", obsFor("gone-pa", "pa")).expect(t, http.StatusCreated)
			admin.do("DELETE", "/Observation/gone-pa", "").expect(t, http.StatusNoContent)
			c.do("POST", "", bundleJSON("transaction", patchEntry("Observation/gone-pa", ops))).expect(t, http.StatusGone)
		})
	}
}
