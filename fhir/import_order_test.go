package fhir_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/fhir"
)

// TestImportConditionalReferenceOrder: a transaction Bundle whose
// conditional reference names a resource that another file creates is
// imported once that file is in, whatever order the files run in; one
// whose reference finds nothing at all is reported, naming the reference,
// and nothing of it is stored. (Transactions only: on a database without
// them the Bundle's resources are imported one by one.)
func TestImportConditionalReferenceOrder(t *testing.T) {
	for _, be := range backends() {
		for _, workers := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s/workers=%d", be.name, workers), func(t *testing.T) {
				c, srv := startServer(t, be.open(t), nil)
				if !strings.Contains(string(c.do("GET", "/metadata", "").body), `"transaction"`) {
					t.Skip("no transactions on this database")
				}
				dir := t.TempDir()
				practitioner := func(npi, family string) string {
					return fmt.Sprintf(`{"resource":{"resourceType":"Practitioner","identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":%q}],"name":[{"family":%q}]},"request":{"method":"POST","url":"Practitioner","ifNoneExist":"identifier=http://hl7.org/fhir/sid/us-npi|%s"}}`, npi, family, npi)
				}
				patient := func(family, npi string) string {
					return bundleJSON("transaction",
						`{"fullUrl":"urn:uuid:4a1e6a8c-1d1c-4c7e-9a49-2f0c1a7e0b01","resource":{"resourceType":"Patient","name":[{"family":"`+family+`"}],"generalPractitioner":[{"reference":"Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|`+npi+`"}]},"request":{"method":"POST","url":"Patient"}}`,
						`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"pain"},"subject":{"reference":"urn:uuid:4a1e6a8c-1d1c-4c7e-9a49-2f0c1a7e0b01"},"performer":[{"reference":"Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|`+npi+`"}]},"request":{"method":"POST","url":"Observation"}}`)
				}
				files := map[string]string{
					// Sorted first, so that with one worker they run before the
					// practitioners they need.
					"a-patient.json":       patient("OrderA", "111"),
					"b-patient.json":       patient("OrderB", "222"),
					"c-orphan.json":        patient("Orphan", "999"),
					"z-practitioners.json": bundleJSON("transaction", practitioner("111", "Doc"), practitioner("222", "Doc")),
				}
				for name, body := range files {
					if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				rep, err := srv.Importer().ImportPaths(context.Background(), []string{dir}, fhir.ImportOptions{Workers: workers})
				if err != nil {
					t.Fatal(err)
				}
				if rep.Stored != 6 || rep.Failed != 2 {
					t.Errorf("stored %d, failed %d; want 6 and 2 (the orphan's two entries)", rep.Stored, rep.Failed)
				}
				if len(rep.Failures) != 1 || !strings.HasSuffix(rep.Failures[0].File, "c-orphan.json") ||
					!strings.Contains(rep.Failures[0].Reason, "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|999") {
					t.Errorf("failures %+v, want the orphan's reference named", rep.Failures)
				}
				if workers == 1 {
					var base []string
					for _, f := range rep.Retried {
						base = append(base, filepath.Base(f))
					}
					if !slices.Equal(base, []string{"a-patient.json", "b-patient.json", "c-orphan.json"}) {
						t.Errorf("retried %v, want the three patient Bundles", base)
					}
				}
				for _, fam := range []string{"OrderA", "OrderB"} {
					if n := countFamily(t, c, fam); n != 1 {
						t.Errorf("%d %s patients, want 1", n, fam)
					}
				}
				if n := countFamily(t, c, "Orphan"); n != 0 {
					t.Errorf("the orphan Bundle stored %d patients", n)
				}
				// The references point at the practitioners.
				b := c.do("GET", "/Patient?family=OrderA", "").expect(t, http.StatusOK).json(t)
				ref, _ := get(b, "entry", 0, "resource", "generalPractitioner", 0, "reference").(string)
				doc := c.do("GET", "/"+ref, "").expect(t, http.StatusOK).json(t)
				if v, _ := json.Marshal(get(doc, "identifier", 0, "value")); string(v) != `"111"` {
					t.Errorf("OrderA's practitioner %s has identifier %s", ref, v)
				}
				// A second run finds everything done, the orphan included
				// (reported once, as every failed file).
				again, err := srv.Importer().ImportPaths(context.Background(), []string{dir}, fhir.ImportOptions{Workers: workers})
				if err != nil || again.Stored != 0 || again.Skipped != 8 {
					t.Errorf("second run: %v, stored %d, skipped %d; want 0 and 8", err, again.Stored, again.Skipped)
				}
			})
		}
	}
}
