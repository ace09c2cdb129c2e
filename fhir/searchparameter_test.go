package fhir_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/fhir/fhirtest"
	"github.com/anodyne-fhir/anodyne/resources"
)

func painSitePatient(id, site string) string {
	return fmt.Sprintf(`{"resourceType":"Patient","id":%q,"extension":[{"url":"http://example.org/fhir/StructureDefinition/pain-body-site","valueCodeableConcept":{"coding":[{"system":"http://snomed.info/sct","code":%q}]}}]}`, id, site)
}

const painSiteParam = `{"resourceType":"SearchParameter","url":"http://example.org/fhir/SearchParameter/patient-pain-site","name":"PainSite","status":"active","description":"Pain body site","code":"pain-site","base":["Patient"],"type":"token",
  "expression":"Patient.extension.where(url='http://example.org/fhir/StructureDefinition/pain-body-site').value"}`

// TestCustomSearchParameter creates a SearchParameter over REST and checks
// that existing resources become searchable after the background
// reindex, that new writes are indexed, that the status is visible and
// that the CapabilityStatement lists the parameter.
func TestCustomSearchParameter(t *testing.T) {
	be := backends()[0].open(t)
	v, _ := parts(t)
	// Its own registry: Add changes it, and the shared one must stay official.
	reg, err := resources.Load()
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(nil)
	srv, err := fhir.New(fhir.Config{BaseURL: "http://" + ts.Listener.Addr().String(), Backend: be, Validator: v, Registry: reg,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = srv.Handler()
	ts.Start()
	t.Cleanup(ts.Close)
	c := &client{t: t, base: ts.URL + "/fhir", root: ts.URL, srv: &fhirtest.Server{FHIR: srv, Root: ts.URL, Base: ts.URL + "/fhir", Client: ts.Client()}}

	c.do("PUT", "/Patient/ps1", painSitePatient("ps1", "77568009")).expect(t, http.StatusCreated) // back
	c.do("PUT", "/Patient/ps2", painSitePatient("ps2", "69536005")).expect(t, http.StatusCreated) // head
	c.do("PUT", "/Patient/ps3", painSitePatient("ps3", "77568009")).expect(t, http.StatusCreated)
	// Unknown before: ignored, or 400 when strict.
	c.do("GET", "/Patient?pain-site=77568009", "", "Prefer: handling=strict").expect(t, http.StatusBadRequest)

	created := c.do("POST", "/SearchParameter", painSiteParam).expect(t, http.StatusCreated).json(t)
	spID := created["id"].(string)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.RunSearchParameters(ctx, 20*time.Millisecond) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("RunSearchParameters returned %v, want context.Canceled", err)
		}
	}()

	deadline := time.Now().Add(15 * time.Second)
	var state string
	for time.Now().Before(deadline) {
		st := c.do("GET", "/SearchParameter/"+spID+"/$reindex-status", "").expect(t, http.StatusOK).json(t)
		state, _ = get(st, "parameter", 0, "valueCode").(string)
		if state == "active" || state == "failed" {
			if state == "failed" {
				t.Fatalf("reindex failed: %v", st)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if state != "active" {
		t.Fatalf("reindex state %q after 15s", state)
	}
	if got := sorted(c.search(t, "/Patient?pain-site=http://snomed.info/sct|77568009", "Prefer: handling=strict")); !slices.Equal(got, []string{"Patient/ps1", "Patient/ps3"}) {
		t.Fatalf("custom parameter on existing resources: %v", got)
	}
	// The backend reindexes in place: no new version, nothing in history.
	for _, id := range []string{"ps1", "ps2", "ps3"} {
		r := c.do("GET", "/Patient/"+id, "").expect(t, http.StatusOK)
		if v := get(r.json(t), "meta", "versionId"); v != "1" {
			t.Errorf("Patient/%s meta.versionId = %v after reindex, want 1", id, v)
		}
		if etag := r.header.Get("ETag"); etag != `W/"1"` {
			t.Errorf("Patient/%s ETag = %q after reindex, want W/\"1\"", id, etag)
		}
		h := c.do("GET", "/Patient/"+id+"/_history", "").expect(t, http.StatusOK).json(t)
		if entries, _ := h["entry"].([]any); len(entries) != 1 {
			t.Errorf("Patient/%s has %d history entries after reindex, want 1", id, len(entries))
		}
	}
	c.do("PUT", "/Patient/ps4", painSitePatient("ps4", "69536005")).expect(t, http.StatusCreated)
	if got := sorted(c.search(t, "/Patient?pain-site=69536005")); !slices.Equal(got, []string{"Patient/ps2", "Patient/ps4"}) {
		t.Fatalf("custom parameter on new writes: %v", got)
	}
	md := c.do("GET", "/metadata", "").expect(t, http.StatusOK)
	if !strings.Contains(string(md.body), `"pain-site"`) {
		t.Errorf("CapabilityStatement does not list pain-site")
	}
	c.do("GET", "/SearchParameter/nope/$reindex-status", "").expect(t, http.StatusNotFound)
	c.do("GET", "/Patient/ps1/$reindex-status", "").expect(t, http.StatusNotFound)
}
