package conformance

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAgreementWithJavaValidator runs the R4 JSON cases of HL7's
// fhir-test-cases (testdata/validator-cases, copied with their licence) and
// compares accept/reject with the reference Java validator's recorded
// outcome. Most of that validator's findings (terminology, profiles,
// invariants, signatures) are outside structural validation, so the overall
// figure is reported, not asserted; the structural "fmt" cases must agree.
func TestAgreementWithJavaValidator(t *testing.T) {
	const dir = "testdata/validator-cases"
	f, err := os.Open(filepath.Join(dir, "selected-r4-json-cases.tsv"))
	if err != nil {
		t.Fatalf("opening case list: %v", err)
	}
	defer f.Close()
	v := newTestValidator(t)

	var cases, javaRejects, bothReject, javaClean, weFlagClean int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) != 4 {
			continue
		}
		name, input, outcome, module := cols[0], cols[1], filepath.Base(cols[2]), cols[3]
		out, err := os.ReadFile(filepath.Join(dir, "outcomes", outcome))
		if err != nil {
			continue // no recorded outcome for this case
		}
		body, err := os.ReadFile(filepath.Join(dir, "inputs", input))
		if err != nil {
			t.Fatalf("case %s: %v", name, err)
		}
		javaErr, err := outcomeHasErrors(out)
		if err != nil {
			t.Fatalf("case %s: reading outcome: %v", name, err)
		}
		_, issues := v.Validate(context.Background(), body)
		weErr := HasErrors(issues)
		cases++
		if javaErr {
			javaRejects++
			if weErr {
				bothReject++
			}
		} else {
			javaClean++
			if weErr {
				weFlagClean++
				t.Logf("flagged a case the Java validator accepts: %s (%s):%s", name, module, formatIssues(issues))
			}
		}
		if module == "fmt" && javaErr != weErr {
			t.Errorf("structural case %s: Java rejects=%v, we reject=%v:%s", name, javaErr, weErr, formatIssues(issues))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading case list: %v", err)
	}
	if cases < 100 {
		t.Fatalf("only %d cases with outcomes; test data incomplete", cases)
	}
	t.Logf("agreement with the Java validator over %d R4 JSON cases: found %d of %d it rejects; flagged %d of %d it accepts",
		cases, bothReject, javaRejects, weFlagClean, javaClean)
}

func outcomeHasErrors(outcome []byte) (bool, error) {
	var oo struct {
		Issue []struct {
			Severity string `json:"severity"`
		} `json:"issue"`
	}
	if err := json.NewDecoder(bytes.NewReader(outcome)).Decode(&oo); err != nil {
		return false, err
	}
	for _, is := range oo.Issue {
		if is.Severity == "error" || is.Severity == "fatal" {
			return true, nil
		}
	}
	return false, nil
}
