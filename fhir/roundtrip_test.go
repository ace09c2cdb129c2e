package fhir_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

// knownInvalid lists official R4 examples that are genuinely invalid and
// that the server therefore rejects, each with the reason.
var knownInvalid = map[string]string{
	"DeviceMetric-example.json":        "DeviceMetric.parent references a DeviceDefinition where R4 allows only Device",
	"MedicationRequest-medrx0301.json": "dispenseRequest.performer references a Practitioner where R4 allows only Organization",
	"Observation-clinical-gender.json": "Observation.performer references an Encounter, not an allowed target",
	"Questionnaire-qs1.json":           "nested items lack the required linkId",
}

// roundTrip stores body with PUT at its own id, reads it back and compares
// it with the input semantically: same JSON, numbers compared by their
// text, server-set meta.versionId/lastUpdated ignored.
func roundTrip(t *testing.T, c *client, body []byte) {
	t.Helper()
	in := decodeUseNumber(t, body)
	typ, _ := in["resourceType"].(string)
	id, _ := in["id"].(string)
	if typ == "" || id == "" {
		t.Fatalf("input without resourceType or id")
	}
	c.do("PUT", "/"+typ+"/"+id, string(body)).expectOneOf(t, http.StatusCreated, http.StatusOK)
	out := c.do("GET", "/"+typ+"/"+id, "").expect(t, http.StatusOK).json(t)
	stripServerMeta(in)
	stripServerMeta(out)
	if !reflect.DeepEqual(in, out) {
		a, _ := json.Marshal(in)
		b, _ := json.Marshal(out)
		t.Errorf("%s/%s changed in the round trip:\nin:  %.2000s\nout: %.2000s", typ, id, a, b)
	}
}

func decodeUseNumber(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("decoding test input: %v", err)
	}
	return m
}

func stripServerMeta(m map[string]any) {
	meta, ok := m["meta"].(map[string]any)
	if !ok {
		return
	}
	delete(meta, "versionId")
	delete(meta, "lastUpdated")
	if len(meta) == 0 {
		delete(m, "meta")
	}
}

func (r response) expectOneOf(t testing.TB, want ...int) response {
	t.Helper()
	for _, w := range want {
		if r.status == w {
			return r
		}
	}
	t.Fatalf("status %d, want one of %v; body: %.3000s", r.status, want, r.body)
	return r
}

// TestRoundTripExamples feeds every official example resource of testdata
// through create and read on every backend.
func TestRoundTripExamples(t *testing.T) {
	files, err := filepath.Glob("../testdata/r4-examples/resources/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	sort.Strings(files)
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			c := newServer(t, be.open(t), nil)
			for _, f := range files {
				name := filepath.Base(f)
				t.Run(strings.TrimSuffix(name, ".json"), func(t *testing.T) {
					body, err := os.ReadFile(f)
					if err != nil {
						t.Fatal(err)
					}
					if why, bad := knownInvalid[name]; bad {
						m := decodeUseNumber(t, body)
						r := c.do("PUT", "/"+m["resourceType"].(string)+"/"+m["id"].(string), string(body))
						if r.status != http.StatusBadRequest && r.status != http.StatusUnprocessableEntity {
							t.Errorf("known-invalid example (%s) was accepted: %d", why, r.status)
						}
						return
					}
					roundTrip(t, c, body)
				})
			}
		})
	}
}

// TestRoundTripSynthea stores every resource of a few Synthea bundles
// individually at its urn:uuid id (references stay urn:uuid) and reads it back.
func TestRoundTripSynthea(t *testing.T) {
	files, err := filepath.Glob("../testdata/synthea/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Synthea bundles found: %v", err)
	}
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			if be.name == "mongo" && testing.Short() {
				t.Skip("slow on FerretDB; run without -short")
			}
			c := newServer(t, be.open(t), nil)
			n := 0
			for _, f := range files {
				raw, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				var bundle struct {
					Entry []struct {
						FullURL  string          `json:"fullUrl"`
						Resource json.RawMessage `json:"resource"`
					} `json:"entry"`
				}
				if err := json.Unmarshal(raw, &bundle); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				for _, e := range bundle.Entry {
					id := strings.TrimPrefix(e.FullURL, "urn:uuid:")
					res := decodeUseNumber(t, e.Resource)
					res["id"] = id
					body, err := json.Marshal(res)
					if err != nil {
						t.Fatal(err)
					}
					roundTrip(t, c, body)
					n++
				}
			}
			t.Logf("%d Synthea resources round-tripped", n)
		})
	}
}

// TestDurability writes over HTTP, closes the server and the database,
// reopens the same data directory and reads everything back.
func TestDurability(t *testing.T) {
	dir := t.TempDir()
	open := func() storage.Backend {
		b, err := sqliteOpen(dir)
		if err != nil {
			t.Fatalf("open sqlite: %v", err)
		}
		return b
	}
	b1 := open()
	c1 := newServer(t, b1, nil)
	created := c1.do("POST", "/Observation", observation).expect(t, http.StatusCreated)
	id := created.json(t)["id"].(string)
	c1.do("PUT", "/Patient/durable", patientJSON("durable", "Kept")).expect(t, http.StatusCreated)
	c1.do("PUT", "/Patient/durable", patientJSON("durable", "Kept2")).expect(t, http.StatusOK)
	if err := b1.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	b2 := open()
	t.Cleanup(func() { b2.Close() })
	c2 := newServer(t, b2, nil)
	r := c2.do("GET", "/Observation/"+id, "").expect(t, http.StatusOK)
	if !bytes.Equal(r.body, created.body) {
		t.Errorf("after reopen:\n%s\nwant\n%s", r.body, created.body)
	}
	p := c2.do("GET", "/Patient/durable", "").expect(t, http.StatusOK).json(t)
	if get(p, "meta", "versionId") != "2" || get(p, "name", 0, "family") != "Kept2" {
		t.Errorf("Patient after reopen: %v", p)
	}
	c2.do("GET", "/Patient/durable/_history/1", "").expect(t, http.StatusOK)
}
