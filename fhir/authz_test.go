package fhir_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// policy adapts the real SMART decision point to fhir.Authorizer.
type policy struct{ p *auth.Policy }

func (a policy) Decide(ctx context.Context, action, typ string) (fhir.Decision, error) {
	d, err := a.p.Decide(ctx, action, typ)
	return fhir.Decision{Allowed: d.Allowed, Filter: d.Filter, Reason: d.Reason}, err
}

// withPrincipal stands in for token verification (tested in package auth):
// it gives every request the principal of a patient-context launch.
func withPrincipal(p *auth.Principal) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			c.SetRequest(r.WithContext(auth.WithPrincipal(r.Context(), p)))
			return next(c)
		}
	}
}

func obsFor(id, patient string) string {
	return fmt.Sprintf(`{"resourceType":"Observation","id":%q,"status":"final","code":{"text":"pain"},"subject":{"reference":"Patient/%s"},"valueInteger":3}`, id, patient)
}

// twoPatients stores patients pa and pb with one Observation each, and
// returns an unrestricted client and one acting for patient pa with the
// given scopes through the real SMART policy.
func twoPatients(t *testing.T, b storage.Backend, scopes string) (admin, pa *client) {
	t.Helper()
	admin = newServer(t, b, nil)
	for _, p := range []string{"pa", "pb"} {
		admin.do("PUT", "/Patient/"+p, patientJSON(p, "Fam"+p)).expect(t, http.StatusCreated)
		admin.do("PUT", "/Observation/o-"+p, obsFor("o-"+p, p)).expect(t, http.StatusCreated)
	}
	_, reg := parts(t)
	pr := &auth.Principal{Patient: "pa", Scopes: auth.ParseScopes(scopes)}
	pa = newServer(t, b, func(cfg *fhir.Config) {
		cfg.Authorizer = policy{auth.NewPolicy(reg)}
		cfg.Middleware = withPrincipal(pr)
	})
	return admin, pa
}

// TestAuthorization checks that with a patient/*.rs token no resource of
// another patient leaves by any path, and that writes need their scope.
func TestAuthorization(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			b := be.open(t)
			_, c := twoPatients(t, b, "patient/Patient.rs patient/Observation.rs patient/Observation.u")
			cases := []struct {
				name   string
				method string
				path   string
				body   string
				want   int
			}{
				{"own observation", "GET", "/Observation/o-pa", "", 200},
				{"other observation", "GET", "/Observation/o-pb", "", 403},
				{"other observation vread", "GET", "/Observation/o-pb/_history/1", "", 403},
				{"own patient", "GET", "/Patient/pa", "", 200},
				{"other patient", "GET", "/Patient/pb", "", 403},
				{"type without scope", "GET", "/Condition/x", "", 403},
				{"update own", "PUT", "/Observation/o-pa", obsFor("o-pa", "pa"), 200},
				{"update other", "PUT", "/Observation/o-pb", obsFor("o-pb", "pb"), 403},
				{"move own out of reach", "PUT", "/Observation/o-pa", obsFor("o-pa", "pb"), 403},
				{"create without c", "POST", "/Observation", obsFor("new", "pa"), 403},
				{"delete without d", "DELETE", "/Observation/o-pa", "", 403},
				{"patch other", "PATCH", "/Observation/o-pb", "", 403},
				{"validate other", "POST", "/Observation/o-pb/$validate", "", 403},
				{"metadata is public", "GET", "/metadata", "", 200},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					var hdr []string
					body := tc.body
					if tc.method == "PATCH" {
						body = `[{"op":"replace","path":"/status","value":"amended"}]`
						hdr = append(hdr, "Content-Type: application/json-patch+json")
					}
					r := c.do(tc.method, tc.path, body, hdr...).expect(t, tc.want)
					if tc.want == 403 {
						if r.outcome(t) != "forbidden" || strings.Contains(string(r.body), "Fampb") {
							t.Errorf("403 body: %s", r.body)
						}
					}
				})
			}
			// Multi-resource paths: only patient pa's data comes back.
			for _, path := range []string{"/Observation", "/Observation?status=final", "/Observation/_history", "/Observation/o-pb/_history", "/Patient", "/_history"} {
				t.Run("list "+path, func(t *testing.T) {
					r := c.do("GET", path, "")
					if r.status == http.StatusForbidden {
						return // refusing the whole request reveals nothing either
					}
					r.expect(t, http.StatusOK)
					entries, err := json.Marshal(get(r.json(t), "entry"))
					if err != nil {
						t.Fatal(err)
					}
					if strings.Contains(string(entries), "pb") {
						t.Errorf("%s leaks patient pb: %s", path, entries)
					}
				})
			}
			if n := len(get(c.do("GET", "/Observation", "").expect(t, http.StatusOK).json(t), "entry").([]any)); n != 1 {
				t.Errorf("search returned %d observations, want 1 (o-pa)", n)
			}
		})
	}
}

// TestDeletedOutsideGrant: a deleted resource outside the grant answers
// exactly as a live one outside it (403 forbidden), on read, vread and
// instance history, so that 410 "was deleted" cannot tell a patient token
// which of another patient's ids once existed; the caller's own deleted
// resource still answers 410.
func TestDeletedOutsideGrant(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			b := be.open(t)
			admin, c := twoPatients(t, b, "patient/Patient.rs patient/Observation.rs")
			_, reg := parts(t)
			cu := newServer(t, b, func(cfg *fhir.Config) {
				cfg.Authorizer = policy{auth.NewPolicy(reg)}
				cfg.Middleware = withPrincipal(&auth.Principal{Patient: "pa", Scopes: auth.ParseScopes("patient/Observation.rsu")})
			})
			admin.do("PUT", "/Observation/gone-pb", obsFor("gone-pb", "pb")).expect(t, http.StatusCreated)
			admin.do("PUT", "/Observation/gone-pa", obsFor("gone-pa", "pa")).expect(t, http.StatusCreated)
			admin.do("DELETE", "/Observation/gone-pb", "").expect(t, http.StatusNoContent)
			admin.do("DELETE", "/Observation/gone-pa", "").expect(t, http.StatusNoContent)

			shape := func(r response) string {
				return fmt.Sprintf("%d %s %s", r.status, r.outcome(t), strings.ReplaceAll(string(r.body), "o-pb", "ID"))
			}
			for _, p := range []struct{ live, deleted string }{
				{"/Observation/o-pb", "/Observation/gone-pb"},
				{"/Observation/o-pb/_history/1", "/Observation/gone-pb/_history/2"},
				{"/Observation/o-pb/_history", "/Observation/gone-pb/_history"},
			} {
				live := c.do("GET", p.live, "")
				gone := c.do("GET", p.deleted, "")
				if gone.status != http.StatusForbidden || live.status != http.StatusForbidden {
					t.Errorf("%s = %d, %s = %d; want both 403", p.live, live.status, p.deleted, gone.status)
					continue
				}
				if strings.Contains(string(gone.body), "deleted") || strings.Contains(string(gone.body), "version") {
					t.Errorf("%s reveals the deletion: %s", p.deleted, gone.body)
				}
				if l, g := shape(live), strings.ReplaceAll(shape(gone), "gone-pb", "ID"); l != g {
					t.Errorf("answers differ:\n live    %s\n deleted %s", l, g)
				}
			}
			// The other paths that answer 410 for a deleted resource: patch
			// (with an update grant), instance $validate and $everything.
			for _, p := range []struct{ method, live, deleted string }{
				{"PATCH", "/Observation/o-pb", "/Observation/gone-pb"},
				{"POST", "/Observation/o-pb/$validate", "/Observation/gone-pb/$validate"},
			} {
				body, hdr := "", []string(nil)
				if p.method == "PATCH" {
					body, hdr = `[{"op":"replace","path":"/status","value":"amended"}]`, []string{"Content-Type: application/json-patch+json"}
				}
				live := cu.do(p.method, p.live, body, hdr...)
				gone := cu.do(p.method, p.deleted, body, hdr...)
				if live.status != http.StatusForbidden || gone.status != http.StatusForbidden {
					t.Errorf("%s %s = %d, %s = %d; want both 403", p.method, p.live, live.status, p.deleted, gone.status)
				}
			}
			admin.do("PUT", "/Patient/pgone", patientJSON("pgone", "Famgone")).expect(t, http.StatusCreated)
			admin.do("DELETE", "/Patient/pgone", "").expect(t, http.StatusNoContent)
			if r := c.do("GET", "/Patient/pgone/$everything", ""); r.status != http.StatusForbidden {
				t.Errorf("$everything of another deleted patient = %d, want 403: %s", r.status, r.body)
			}
			c.do("GET", "/Observation/gone-pa", "").expect(t, http.StatusGone)
			c.do("GET", "/Observation/gone-pa/_history/2", "").expect(t, http.StatusGone)
			c.do("GET", "/Observation/gone-pa/_history", "").expect(t, http.StatusOK)
		})
	}
}
