package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// medRequest is an NDJSON line of a MedicationRequest for patient, one
// tablet count every hours.
func medRequest(id, patient, rxcui, text string, tablets, hours float64) string {
	res := map[string]any{
		"resourceType": "MedicationRequest", "id": id, "status": "active", "intent": "order",
		"subject": map[string]any{"reference": "Patient/" + patient},
		"medicationCodeableConcept": map[string]any{
			"coding": []any{map[string]any{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": rxcui}},
			"text":   text,
		},
		"dosageInstruction": []any{map[string]any{
			"timing":      map[string]any{"repeat": map[string]any{"frequency": 1, "period": hours, "periodUnit": "h"}},
			"doseAndRate": []any{map[string]any{"doseQuantity": map[string]any{"value": tablets, "unit": "tablet"}}},
		}},
	}
	raw, _ := json.Marshal(res)
	return string(raw)
}

// exported returns the resources of a direct export of dir by "Type/id".
func exported(t *testing.T, dir string) map[string]map[string]any {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	runCmd(t, false, "export", "--data-dir", dir, out)
	got := map[string]map[string]any{}
	for k, v := range readExport(t, out) {
		var m map[string]any
		if err := json.Unmarshal([]byte(v), &m); err != nil {
			t.Fatal(err)
		}
		got[k] = m
	}
	return got
}

// mmeOf returns the mmePerDay recorded on a MedicationRequest (-1: none).
func mmeOf(res map[string]any) float64 {
	exts, _ := res["extension"].([]any)
	for _, e := range exts {
		m, _ := e.(map[string]any)
		if m["url"] != "http://anodyne-fhir.org/fhir/StructureDefinition/opioid-mme" {
			continue
		}
		subs, _ := m["extension"].([]any)
		for _, s := range subs {
			sm, _ := s.(map[string]any)
			if sm["url"] == "mmePerDay" {
				v, _ := sm["valueDecimal"].(float64)
				return v
			}
		}
	}
	return -1
}

// TestImportDerivesOpioidSafety: a direct "anodyne import" records MME on
// each MedicationRequest and raises the DetectedIssues a served write
// would, and --opioid-table adds a drug the embedded table lacks.
func TestImportDerivesOpioidSafety(t *testing.T) {
	tmp := t.TempDir()
	data := filepath.Join(tmp, "meds.ndjson")
	lines := []string{
		`{"resourceType":"Patient","id":"p1"}`,
		`{"resourceType":"Patient","id":"p2"}`,
		// oxycodone 5 mg, 2 tablets every 4 h: 2 × 5 mg × 6/day = 60 mg × 1.5 = 90 MME/day.
		medRequest("a", "p1", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", 2, 4),
		// hydromorphone 4 mg, 1 tablet every 6 h: 4 mg × 4/day = 16 mg × 5.0 = 80 MME/day,
		// a drug only the operator's table knows.
		medRequest("b", "p2", "897702", "hydromorphone hydrochloride 4 MG Oral Tablet", 1, 6),
	}
	if err := os.WriteFile(data, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	table := filepath.Join(tmp, "opioids.json")
	os.WriteFile(table, []byte(`{"factors": [], "drugs": [{"rxcui": "897702", "tty": "SCD", "name": "hydromorphone hydrochloride 4 MG Oral Tablet", "form": "tablet",
	  "ingredients": [{"rxcui": "3423", "strength": 4, "unit": "mg"}]}], "benzodiazepines": [], "timingCodes": {}}`), 0o600)

	plain := filepath.Join(tmp, "plain")
	runCmd(t, false, "import", "--data-dir", plain, "--quiet", data)
	got := exported(t, plain)
	if m := mmeOf(got["MedicationRequest/a"]); m != 90 {
		t.Errorf("imported oxycodone: mmePerDay %v, want 90; %v", m, got["MedicationRequest/a"])
	}
	if m := mmeOf(got["MedicationRequest/b"]); m != -1 && m != 0 {
		t.Errorf("hydromorphone 4 mg is not in the embedded table, yet mmePerDay is %v", m)
	}
	if di := got["DetectedIssue/mme-p1"]; di == nil || di["severity"] != "high" || di["status"] != "final" {
		t.Errorf("DetectedIssue/mme-p1 after import: %v", di)
	}
	if di := got["DetectedIssue/mme-p2"]; di != nil {
		t.Errorf("p2's MME is unknown without the table, yet: %v", di)
	}

	extended := filepath.Join(tmp, "extended")
	runCmd(t, false, "import", "--data-dir", extended, "--opioid-table", table, "--quiet", data)
	got = exported(t, extended)
	if m := mmeOf(got["MedicationRequest/b"]); m != 80 {
		t.Errorf("with --opioid-table: mmePerDay %v, want 80; %v", m, got["MedicationRequest/b"])
	}
	if di := got["DetectedIssue/mme-p2"]; di == nil || di["severity"] != "moderate" {
		t.Errorf("DetectedIssue/mme-p2 with the table: %v", di)
	}
}

// TestOpioidTableRefused: a table file that does not hold stops serve and
// import before anything is written, naming the file and the reason.
func TestOpioidTableRefused(t *testing.T) {
	tmp := t.TempDir()
	bad := filepath.Join(tmp, "bad.json")
	os.WriteFile(bad, []byte(`{"drugs": [{"rxcui": "1", "form": "tablet", "ingredients": [{"rxcui": "999", "strength": 1, "unit": "mg"}]}]}`), 0o600)
	typo := filepath.Join(tmp, "typo.json")
	os.WriteFile(typo, []byte(`{"drug": []}`), 0o600)
	for _, c := range []struct{ file, want string }{
		{bad, "ingredient 999 has no conversion factor"},
		{typo, `unknown field "drug"`},
		{filepath.Join(tmp, "missing.json"), "no such file"},
	} {
		for _, args := range [][]string{
			{"import", "--data-dir", filepath.Join(tmp, "db"), "--opioid-table", c.file, "--quiet", bad},
			{"serve", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(tmp, "db"), "--auth=off", "--audit=off", "--opioid-table", c.file},
		} {
			var stderr bytes.Buffer
			err := run(context.Background(), args, io.Discard, &stderr, func(string) string { return "" }, nil)
			if err == nil || !strings.Contains(err.Error(), c.file) && !strings.Contains(err.Error(), "--opioid-table") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s with %s: err %v, want it to name the file and %q", args[0], filepath.Base(c.file), err, c.want)
			}
		}
	}
	err := run(context.Background(), []string{"import", "--server", "http://127.0.0.1:1/fhir", "--opioid-table", bad, bad}, io.Discard, io.Discard, func(string) string { return "" }, nil)
	if err == nil || !strings.Contains(err.Error(), "--opioid-table applies to a direct import") {
		t.Errorf("--opioid-table with --server: %v", err)
	}
}
