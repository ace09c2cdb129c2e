package fhir_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/fhir"
)

// lnObs is one generated Observation, as the test knows it (the expected
// answers are computed from these, never from the server).
type lnObs struct {
	id, patient, category, status string
	codings                       [][2]string // system, code
	text                          string
	t                             time.Time
}

func (o lnObs) json() string {
	code := map[string]any{}
	var cs []any
	for _, c := range o.codings {
		m := map[string]any{"code": c[1]}
		if c[0] != "" {
			m["system"] = c[0]
		}
		cs = append(cs, m)
	}
	if cs != nil {
		code["coding"] = cs
	}
	if o.text != "" {
		code["text"] = o.text
	}
	b, _ := json.Marshal(map[string]any{
		"resourceType": "Observation", "id": o.id, "status": o.status,
		"category": []any{map[string]any{"coding": []any{map[string]any{
			"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": o.category}}}},
		"code":              code,
		"subject":           map[string]any{"reference": "Patient/" + o.patient},
		"effectiveDateTime": o.t.UTC().Format(time.RFC3339),
		"valueInteger":      1,
	})
	return string(b)
}

const lnLOINC = "http://loinc.org"

// lnData generates two patients' Observations: translations (a with c),
// the same code in another system, a coding without a system, text-only
// codes differing only in case and spacing, a link between x and y made
// only by the oldest Observation, ties in effective time, statuses
// including entered-in-error, and two categories.
func lnData() []lnObs {
	rng := rand.New(rand.NewPCG(14, 2026))
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	shapes := []struct {
		codings [][2]string
		text    string
	}{
		{codings: [][2]string{{lnLOINC, "a"}}}, {codings: [][2]string{{lnLOINC, "b"}}},
		{codings: [][2]string{{lnLOINC, "a"}, {lnLOINC, "c"}}}, {codings: [][2]string{{lnLOINC, "c"}}},
		{codings: [][2]string{{lnLOINC, "x"}}}, {codings: [][2]string{{lnLOINC, "y"}}},
		{codings: [][2]string{{"urn:other", "a"}}}, {codings: [][2]string{{"", "nosys"}}},
		{text: "text"}, {text: "Text"}, {text: "t e x t"},
	}
	var out []lnObs
	for _, p := range []string{"pa", "pb"} {
		for i := range 36 {
			sh := shapes[rng.IntN(len(shapes))]
			cat := "vital-signs"
			if rng.IntN(5) == 0 {
				cat = "laboratory"
			}
			status := "final"
			switch rng.IntN(10) {
			case 0:
				status = "entered-in-error"
			case 1:
				status = "amended"
			}
			// Few time slots, so that ties occur.
			t := t0.Add(time.Duration(rng.IntN(40)) * 8 * time.Hour)
			out = append(out, lnObs{id: fmt.Sprintf("%s-%02d", p, i), patient: p, category: cat, status: status,
				codings: sh.codings, text: sh.text, t: t})
		}
		// The only link between x and y is the oldest Observation.
		out = append(out, lnObs{id: p + "-xy", patient: p, category: "vital-signs", status: "final",
			codings: [][2]string{{lnLOINC, "x"}, {lnLOINC, "y"}}, t: t0.Add(-24 * time.Hour)})
		// A tie at the top of b.
		late := t0.Add(50 * 8 * time.Hour)
		for _, id := range []string{p + "-b1", p + "-b2"} {
			out = append(out, lnObs{id: id, patient: p, category: "vital-signs", status: "final",
				codings: [][2]string{{lnLOINC, "b"}}, t: late})
		}
	}
	return out
}

// lnExpect is the reference answer: groups merged while their code sets
// intersect, each sorted newest first and cut at max (keeping ties).
func lnExpect(all []lnObs, keep func(lnObs) bool, maxN int) [][]lnObs {
	type group struct {
		keys map[string]bool
		obs  []lnObs
	}
	var groups []*group
	for _, o := range all {
		if !keep(o) {
			continue
		}
		keys := map[string]bool{}
		for _, c := range o.codings {
			keys[c[0]+"|"+c[1]] = true
		}
		if len(keys) == 0 {
			keys["text:"+o.text] = true
		}
		g := &group{keys: keys, obs: []lnObs{o}}
		var rest []*group
		for _, h := range groups {
			shared := false
			for k := range h.keys {
				if g.keys[k] {
					shared = true
				}
			}
			if !shared {
				rest = append(rest, h)
				continue
			}
			for k := range h.keys {
				g.keys[k] = true
			}
			g.obs = append(g.obs, h.obs...)
		}
		groups = append(rest, g)
	}
	var out [][]lnObs
	for _, g := range groups {
		sort.SliceStable(g.obs, func(i, j int) bool { return g.obs[i].t.After(g.obs[j].t) })
		n := min(maxN, len(g.obs))
		for n < len(g.obs) && g.obs[n].t.Equal(g.obs[n-1].t) {
			n++
		}
		out = append(out, g.obs[:n])
	}
	return out
}

// checkLastN compares a $lastn Bundle with the expected groups: the same
// Observations, each group contiguous and newest first, groups ordered by
// their newest member.
func checkLastN(t *testing.T, body map[string]any, want [][]lnObs, byID map[string]lnObs) {
	t.Helper()
	groupOf := map[string]int{}
	wantIDs := []string{}
	for gi, g := range want {
		for _, o := range g {
			groupOf[o.id] = gi
			wantIDs = append(wantIDs, o.id)
		}
	}
	var got []string
	for _, e := range entryList(body["entry"]) {
		res := get(e, "resource").(map[string]any)
		if res["resourceType"] != "Observation" {
			t.Fatalf("entry is a %v", res["resourceType"])
		}
		if mode := get(e, "search", "mode"); mode != "match" {
			t.Errorf("entry %v: search.mode %v", res["id"], mode)
		}
		got = append(got, res["id"].(string))
	}
	if n, _ := body["total"].(json.Number).Int64(); int(n) != len(got) {
		t.Errorf("total %d, entries %d", n, len(got))
	}
	gs, ws := slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(wantIDs))
	if !slices.Equal(gs, ws) {
		t.Fatalf("ids\n got %v\nwant %v", gs, ws)
	}
	done := map[int]bool{}
	var lastHead time.Time
	for i, id := range got {
		g := groupOf[id]
		if i > 0 && groupOf[got[i-1]] == g {
			if byID[id].t.After(byID[got[i-1]].t) {
				t.Errorf("%s after %s is newer: not newest first", id, got[i-1])
			}
			continue
		}
		if done[g] {
			t.Errorf("group of %s is not contiguous: %v", id, got)
		}
		done[g] = true
		if i > 0 && byID[id].t.After(lastHead) {
			t.Errorf("group of %s (newest %v) comes after an older group (%v)", id, byID[id].t, lastHead)
		}
		lastHead = byID[id].t
	}
}

func TestLastN(t *testing.T) {
	data := lnData()
	byID := map[string]lnObs{}
	for _, o := range data {
		byID[o.id] = o
	}
	has := func(o lnObs, sys, code string) bool {
		return slices.Contains(o.codings, [2]string{sys, code})
	}
	cases := []struct {
		name  string
		query string
		keep  func(lnObs) bool
		max   int
	}{
		{"vitals latest", "patient=pa&category=vital-signs", func(o lnObs) bool { return o.patient == "pa" && o.category == "vital-signs" }, 1},
		{"vitals last 3", "patient=pa&category=vital-signs&max=3", func(o lnObs) bool { return o.patient == "pa" && o.category == "vital-signs" }, 3},
		{"codes", "patient=Patient/pb&code=http://loinc.org|a,http://loinc.org|b&max=2", func(o lnObs) bool {
			return o.patient == "pb" && (has(o, lnLOINC, "a") || has(o, lnLOINC, "b"))
		}, 2},
		{"subject, status, lab", "subject=Patient/pa&category=laboratory&status=final,amended&max=2", func(o lnObs) bool {
			return o.patient == "pa" && o.category == "laboratory" && o.status != "entered-in-error"
		}, 2},
		{"text codes", "patient=pb&code:text=t&max=2", func(o lnObs) bool {
			return o.patient == "pb" && o.codings == nil // every coded test datum has no text
		}, 2},
		{"everything, large max", "patient=pa&category=vital-signs,laboratory&max=100", func(o lnObs) bool { return o.patient == "pa" }, 100},
		{"no match", "patient=pa&code=http://loinc.org|none", func(lnObs) bool { return false }, 1},
	}
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			b := be.open(t)
			c, srv := startServer(t, b, nil)
			for _, p := range []string{"pa", "pb"} {
				c.do("PUT", "/Patient/"+p, patientJSON(p, "Fam"+p)).expect(t, http.StatusCreated)
			}
			for _, o := range data {
				c.do("PUT", "/Observation/"+o.id, o.json()).expect(t, http.StatusCreated)
			}
			// 0: the default (in memory for these sizes); 1 and 7: seeking
			// (each seek a full scan on FerretDB: one seeking run there).
			probes := []int{0, 1, 7}
			if be.name != "sqlite" {
				probes = []int{0, 7}
			}
			for _, probe := range probes {
				srv.SetLastNProbe(probe)
				for _, tc := range cases {
					t.Run(fmt.Sprintf("probe %d/%s", probe, tc.name), func(t *testing.T) {
						want := lnExpect(data, tc.keep, tc.max)
						body := c.do("GET", "/Observation/$lastn?"+tc.query, "").expect(t, http.StatusOK).json(t)
						if body["type"] != "searchset" {
							t.Errorf("type %v", body["type"])
						}
						checkLastN(t, body, want, byID)
					})
				}
			}
			srv.SetLastNProbe(0)
			t.Run("POST form and Parameters", func(t *testing.T) {
				want := lnExpect(data, func(o lnObs) bool { return o.patient == "pa" && o.category == "vital-signs" }, 2)
				form := c.do("POST", "/Observation/$lastn", "patient=pa&category=vital-signs&max=2",
					"Content-Type: application/x-www-form-urlencoded").expect(t, http.StatusOK).json(t)
				checkLastN(t, form, want, byID)
				params := `{"resourceType":"Parameters","parameter":[{"name":"patient","valueString":"pa"},
					{"name":"category","valueString":"vital-signs"},{"name":"max","valuePositiveInt":2}]}`
				checkLastN(t, c.do("POST", "/Observation/$lastn", params).expect(t, http.StatusOK).json(t), want, byID)
			})
			t.Run("elements and include", func(t *testing.T) {
				body := c.do("GET", "/Observation/$lastn?patient=pa&code=http://loinc.org|b&_elements=code&_include=Observation:subject", "").
					expect(t, http.StatusOK).json(t)
				var modes []string
				for _, e := range entryList(body["entry"]) {
					modes = append(modes, get(e, "search", "mode").(string))
					if get(e, "resource", "resourceType") == "Observation" && get(e, "resource", "valueInteger") != nil {
						t.Errorf("_elements=code kept valueInteger")
					}
				}
				// b has a tie at the top: two matches and the patient.
				if !slices.Equal(modes, []string{"match", "match", "include"}) {
					t.Errorf("modes %v, want two matches (the tie) and the included Patient", modes)
				}
			})
			t.Run("bad requests", func(t *testing.T) {
				for _, q := range []string{
					"category=vital-signs", // no subject
					"patient=pa",           // no category or code
					"patient=pa&category=vital-signs&max=0", "patient=pa&category=vital-signs&max=x",
					"patient=pa&category=vital-signs&max=1001",
					"patient=pa&category=vital-signs&_sort=date", "patient=pa&category=vital-signs&_count=5",
					"patient=pa,pb&category=vital-signs", "patient=pa&patient=pb&category=vital-signs",
					"patient=pa&category:bogus=x",
					"patient=pa&date=notadate&category=vital-signs",
				} {
					r := c.do("GET", "/Observation/$lastn?"+q, "")
					if r.status != http.StatusBadRequest {
						t.Errorf("%s: status %d, want 400: %s", q, r.status, r.body)
						continue
					}
					if code := r.outcome(t); code == "" {
						t.Errorf("%s: no issue code", q)
					}
				}
				r := c.do("POST", "/Observation/$lastn", `{"resourceType":"Patient"}`)
				if r.status != http.StatusBadRequest {
					t.Errorf("POST a Patient: %d", r.status)
				}
				r = c.do("POST", "/Observation/$lastn", "x", "Content-Type: text/plain")
				if r.status != http.StatusUnsupportedMediaType {
					t.Errorf("POST text/plain: %d", r.status)
				}
			})
			t.Run("declared and published", func(t *testing.T) {
				cs := c.do("GET", "/metadata", "").expect(t, http.StatusOK).json(t)
				var ops []any
				for _, r := range entryList(get(cs, "rest", 0, "resource")) {
					if get(r, "type") == "Observation" {
						ops = entryList(get(r, "operation"))
					}
				}
				n := 0
				for _, op := range ops {
					if get(op, "name") == "lastn" {
						n++
						if d := get(op, "definition"); d != "http://hl7.org/fhir/OperationDefinition/Observation-lastn" {
							t.Errorf("definition %v", d)
						}
					}
				}
				if n != 1 {
					t.Errorf("Observation declares lastn %d times: %v", n, ops)
				}
				def := c.do("GET", "/OperationDefinition/Observation-lastn", "").expect(t, http.StatusOK).json(t)
				if def["url"] != "http://hl7.org/fhir/OperationDefinition/Observation-lastn" || def["code"] != "lastn" {
					t.Errorf("definition: %v %v", def["url"], def["code"])
				}
			})
			t.Run("authorized like a search", func(t *testing.T) {
				_, reg := parts(t)
				pc := newServer(t, b, func(cfg *fhir.Config) {
					cfg.Authorizer = policy{auth.NewPolicy(reg)}
					cfg.Middleware = withPrincipal(&auth.Principal{Patient: "pa", Scopes: auth.ParseScopes("patient/Observation.rs")})
				})
				body := pc.do("GET", "/Observation/$lastn?patient=pb&category=vital-signs", "").expect(t, http.StatusOK).json(t)
				if n := len(entryList(body["entry"])); n != 0 {
					t.Errorf("patient pa's token got %d of pb's Observations", n)
				}
				own := pc.do("GET", "/Observation/$lastn?patient=pa&category=vital-signs", "").expect(t, http.StatusOK).json(t)
				checkLastN(t, own, lnExpect(data, func(o lnObs) bool { return o.patient == "pa" && o.category == "vital-signs" }, 1), byID)
				noScope := newServer(t, b, func(cfg *fhir.Config) {
					cfg.Authorizer = policy{auth.NewPolicy(reg)}
					cfg.Middleware = withPrincipal(&auth.Principal{Patient: "pa", Scopes: auth.ParseScopes("patient/Condition.rs")})
				})
				if r := noScope.do("GET", "/Observation/$lastn?patient=pa&category=vital-signs", ""); r.status != http.StatusForbidden {
					t.Errorf("without Observation scope: %d", r.status)
				}
			})
		})
	}
}

// TestLastNSelfLink: the self link names the parameters that were applied.
func TestLastNSelfLink(t *testing.T) {
	b := backends()[0].open(t)
	c := newServer(t, b, nil)
	body := c.do("GET", "/Observation/$lastn?patient=pa&category=vital-signs&max=3&bogus=1", "").expect(t, http.StatusOK).json(t)
	self, _ := get(body, "link", 0, "url").(string)
	u, err := url.Parse(self)
	if err != nil || !strings.HasSuffix(u.Path, "/Observation/$lastn") {
		t.Fatalf("self link %q", self)
	}
	q := u.Query()
	if q.Get("max") != "3" || q.Get("patient") != "pa" || q.Has("bogus") {
		t.Errorf("self link query %v", q)
	}
}
