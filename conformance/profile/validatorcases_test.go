package profile

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/conformance"
)

// minValidatorAgreement is the share of the HL7 validator cases in scope
// on which the server's verdict (structure + core definitions + claimed
// profiles) agrees with the reference Java validator's recorded one, as
// measured when this test was written. The test fails if it drops.
const minValidatorAgreement = 0.79

// validatorCaseOutOfScope says why a case needs more than core R4 and the
// profiles we load: a terminology server, packages or supporting files,
// signatures, other FHIR versions, or validator options we do not have.
func validatorCaseOutOfScope(module, options string) string {
	switch module {
	case "tx", "tx-advanced":
		return "needs a terminology server"
	case "dsig":
		return "checks signatures"
	case "xver":
		return "cross-version extensions"
	}
	for _, o := range strings.Split(options, ",") {
		switch o {
		case "supporting", "supporting5", "packages", "profile", "profiles", "ips", "logical":
			return "needs definitions beyond core R4 (" + o + ")"
		case "fetcher", "validateReference", "validateContains", "security-checks", "for-publication", "allow-comments",
			"certificate", "noHtmlInMarkdown", "no-experimental-content", "allowed-extension-domain", "r5-bundle-relative-reference-policy":
			return "a validator option (" + o + ")"
		}
	}
	return ""
}

// TestHL7ValidatorCases runs the R4 JSON cases of HL7's fhir-test-cases
// that need only core R4 and loaded profiles through what a write goes
// through (the structural validator, then Validate) and compares the
// verdict (any error or not) with the Java validator's.
func TestHL7ValidatorCases(t *testing.T) {
	r := registry(t)
	sv, err := conformance.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("testdata/validator-cases.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const dir = "../testdata/validator-cases"
	var inScope, agree int
	skipped := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "#") {
			continue
		}
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) != 5 {
			t.Fatalf("bad line %q", sc.Text())
		}
		name, input, outcome, module, options := cols[0], cols[1], cols[2], cols[3], cols[4]
		if why := validatorCaseOutOfScope(module, options); why != "" {
			skipped[why]++
			continue
		}
		out, err := os.ReadFile(filepath.Join(dir, "outcomes", outcome))
		if err != nil {
			skipped["no recorded outcome"]++
			continue
		}
		body, err := os.ReadFile(filepath.Join(dir, "inputs", input))
		if err != nil {
			skipped["no input file"]++
			continue
		}
		javaErr, javaText := javaErrors(t, out)
		parsed, issues := sv.Validate(bg, body)
		if unloaded := r.unloadedProfile(parsed.Resource); unloaded != "" {
			skipped["claims a profile we do not load"]++
			continue
		}
		if !conformance.HasErrors(issues) && parsed.Resource != nil {
			issues = append(issues, r.Validate(bg, parsed.Resource, Options{})...)
		}
		weErr := conformance.HasErrors(issues)
		inScope++
		if weErr == javaErr {
			agree++
			continue
		}
		t.Logf("disagree on %s (%s): Java errors=%v%s\n  ours:%s", name, module, javaErr, javaText, issuesText(errorsOf(issues)))
	}
	if inScope < 50 {
		t.Fatalf("only %d cases in scope", inScope)
	}
	rate := float64(agree) / float64(inScope)
	t.Logf("HL7 validator cases: agree on %d of %d in scope (%.1f%%); out of scope: %v", agree, inScope, 100*rate, skipped)
	if rate < minValidatorAgreement {
		t.Errorf("agreement %.3f fell below %.3f", rate, minValidatorAgreement)
	}
}

func javaErrors(t *testing.T, outcome []byte) (bool, string) {
	var oo struct {
		Issue []struct {
			Severity   string                `json:"severity"`
			Details    struct{ Text string } `json:"details"`
			Expression []string              `json:"expression"`
		} `json:"issue"`
	}
	if err := json.Unmarshal(outcome, &oo); err != nil {
		t.Fatalf("outcome: %v", err)
	}
	var b strings.Builder
	has := false
	for _, is := range oo.Issue {
		if is.Severity == "error" || is.Severity == "fatal" {
			has = true
			b.WriteString("\n    java: " + strings.Join(is.Expression, ",") + ": " + is.Details.Text)
		}
	}
	return has, b.String()
}

// unloadedProfile returns a profile the resource claims that the registry does not hold.
func (r *Registry) unloadedProfile(res map[string]any) string {
	for _, u := range claimedProfiles(res) {
		if _, err := r.Definition(bg, u); err != nil {
			return u
		}
	}
	return ""
}
