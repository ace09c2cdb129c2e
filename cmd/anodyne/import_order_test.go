package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportOrderCommand: Bundles given on the command line before the
// Bundle creating the practitioners they refer to by conditional
// reference are imported all the same, directly and through --server
// (where files are sent one at a time in the order given); a reference
// that finds nothing at all is reported with the reference, and the
// command fails.
func TestImportOrderCommand(t *testing.T) {
	in := t.TempDir()
	ref := func(npi string) string {
		return `{"reference":"Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|` + npi + `"}`
	}
	patient := func(family, npi string) string {
		return `{"resourceType":"Bundle","type":"transaction","entry":[` +
			`{"fullUrl":"urn:uuid:7d0c2f0e-5b5e-4d55-8f0b-3c6a2b1e9a01","resource":{"resourceType":"Patient","name":[{"family":"` + family + `"}],"generalPractitioner":[` + ref(npi) + `]},"request":{"method":"POST","url":"Patient"}},` +
			`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"pain"},"subject":{"reference":"urn:uuid:7d0c2f0e-5b5e-4d55-8f0b-3c6a2b1e9a01"},"performer":[` + ref(npi) + `]},"request":{"method":"POST","url":"Observation"}}]}`
	}
	doc := func(npi string) string {
		return fmt.Sprintf(`{"resource":{"resourceType":"Practitioner","identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":%q}]},"request":{"method":"POST","url":"Practitioner","ifNoneExist":"identifier=http://hl7.org/fhir/sid/us-npi|%s"}}`, npi, npi)
	}
	files := []struct{ name, body string }{
		{"p1.json", patient("Alpha", "111")},
		{"p2.json", patient("Beta", "222")},
		{"orphan.json", patient("Gamma", "999")},
		{"practitioners.json", `{"resourceType":"Bundle","type":"transaction","entry":[` + doc("111") + `,` + doc("222") + `]}`},
	}
	var paths []string
	for _, f := range files {
		p := filepath.Join(in, f.name)
		if err := os.WriteFile(p, []byte(f.body), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	check := func(mode, out string) {
		t.Helper()
		stored, failed, _ := reportCounts(t, out)
		if stored != 6 || failed != 2 {
			t.Errorf("%s: stored %d, failed %d; want 6 and 2\n%s", mode, stored, failed, out)
		}
		if !strings.Contains(out, "Bundles went in after the other files") {
			t.Errorf("%s: the report does not say Bundles waited:\n%s", mode, out)
		}
		if !strings.Contains(out, "orphan.json") || !strings.Contains(out, "us-npi|999") || strings.Contains(out, "us-npi|111\" matches 0") {
			t.Errorf("%s: the report does not name exactly the reference that found nothing:\n%s", mode, out)
		}
	}

	check("direct", runCmd(t, true, append([]string{"import", "--data-dir", t.TempDir(), "--quiet"}, paths...)...))

	dir := t.TempDir()
	key := filepath.Join(dir, "etl.jwk")
	cli(t, "clients", "add", "--data-dir", dir, "--id", "etl", "--generate-key", key, "--scope", "system/*.cruds")
	srv := startServe(t, "--data-dir", dir, "--audit=off")
	base := srv.base + "/fhir"
	tok := strings.TrimSpace(cli(t, "token", "--client", "etl", "--key", key, "--scope", "system/*.cruds", "--server", base))
	check("--server", runCmd(t, true, append([]string{"import", "--server", base, "--token", tok, "--state", filepath.Join(t.TempDir(), "st.json"), "--quiet"}, paths...)...))
}
