package deid

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/anodyne-fhir/anodyne/conformance/fhirpath"
)

// default_rules.json is the embedded rule set (see the README's
// "Research access" section for what it keeps and removes).
//
//go:embed default_rules.json
var defaultRules []byte

// DefaultRules returns the embedded rules file.
func DefaultRules() []byte { return bytes.Clone(defaultRules) }

// File is the rules file format:
//
//	{"version": "…", "parameters": {"restrictedZip3": ["036", …]},
//	 "rules": [{"path": "FHIRPath", "method": "redact", "params": {…}}, …]}
type File struct {
	Version    string     `json:"version"`
	Parameters Parameters `json:"parameters"`
	Rules      []RuleSpec `json:"rules"`
}

// Parameters apply to every rule.
type Parameters struct {
	// RestrictedZip3 are the three-digit ZIP prefixes with 20,000 people
	// or fewer; generalize {"to":"zip3"} writes them as "000".
	RestrictedZip3 []string `json:"restrictedZip3"`
	// MaxShiftDays bounds the per-patient date shift (1..MaxShiftDays days
	// back); 0 means 365.
	MaxShiftDays int `json:"maxShiftDays"`
	// MinCellPatients is the small-cell threshold of aggregate answers: a
	// statistic over fewer distinct patients (but more than none) is
	// withheld. 0 means 11 (CMS cell-size suppression: no cell of 1 to 10).
	MinCellPatients int `json:"minCellPatients"`
}

// RuleSpec is one rule as written in the file.
type RuleSpec struct {
	Path   string         `json:"path"`
	Method string         `json:"method"`
	Params map[string]any `json:"params,omitempty"`
}

// RuleError reports a rules file that cannot be used, with the line of the
// offending rule (1-based; 0 when the file as a whole is wrong).
type RuleError struct {
	Line   int
	Reason string
}

func (e *RuleError) Error() string {
	if e.Line == 0 {
		return "rules file: " + e.Reason
	}
	return fmt.Sprintf("rules file line %d: %s", e.Line, e.Reason)
}

var methods = []string{"keep", "redact", "dateShift", "cryptoHash", "generalize", "perturb", "substitute"}

// rule is a compiled rule.
type rule struct {
	line   int
	spec   RuleSpec
	expr   *fhirpath.Expression
	parent *fhirpath.Expression // the path without its last member, when it ends with one
	member string
	// only, when not "", is the resource type the path starts from:
	// other resources are skipped without evaluating.
	only string
	// fastType, when set, means the path is descendants().ofType(fastType)
	// [.member]: the typed walk answers it without the evaluator (the test
	// TestFastPathMatchesEvaluator holds the two to the same answer).
	fastType string
	// lead and steps, when lead is set, are the parent path of the form
	// Type.step.step (see run.navigate).
	lead  string
	steps []string
	index int    // position in the rule set
	to    string // generalize target
}

var (
	memberTail = regexp.MustCompile(`^(.*[^.\s])\s*\.\s*([A-Za-z][A-Za-z0-9_]*)$`)
	fastForm   = regexp.MustCompile(`^descendants\(\)\.ofType\(([A-Za-z][A-Za-z0-9_]*)\)(?:\.([A-Za-z][A-Za-z0-9_]*))?$`)
	leadType   = regexp.MustCompile(`^([A-Z][A-Za-z]*)(\.|$)`)
	simplePath = regexp.MustCompile(`^[A-Z][A-Za-z]*(\.[a-z][A-Za-z0-9_]*)*$`)
)

// compile parses and checks a rules file; every error names its line.
func compile(data []byte, model *fhirpath.Model) (File, []rule, error) {
	var f File
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return f, nil, &RuleError{Line: lineAt(data, se.Offset), Reason: "not valid JSON: " + se.Error()}
		case errors.As(err, &te):
			return f, nil, &RuleError{Line: lineAt(data, te.Offset), Reason: fmt.Sprintf("%s must be %s", te.Field, te.Type)}
		}
		return f, nil, &RuleError{Reason: err.Error()}
	}
	if f.Version == "" {
		return f, nil, &RuleError{Reason: `"version" is required (it labels the output)`}
	}
	lines := ruleLines(data)
	out := make([]rule, 0, len(f.Rules))
	for i, rs := range f.Rules {
		line := 0
		if i < len(lines) {
			line = lines[i]
		}
		r, err := compileRule(rs, model)
		if err != nil {
			return f, nil, &RuleError{Line: line, Reason: err.Error()}
		}
		r.line, r.index = line, i
		out = append(out, r)
	}
	for _, z := range f.Parameters.RestrictedZip3 {
		if len(z) != 3 || strings.Trim(z, "0123456789") != "" {
			return f, nil, &RuleError{Reason: fmt.Sprintf("restrictedZip3: %q is not three digits", z)}
		}
	}
	if f.Parameters.MinCellPatients < 0 {
		return f, nil, &RuleError{Reason: fmt.Sprintf("minCellPatients: %d is negative", f.Parameters.MinCellPatients)}
	}
	return f, out, nil
}

func compileRule(rs RuleSpec, model *fhirpath.Model) (rule, error) {
	r := rule{spec: rs}
	if !slices.Contains(methods, rs.Method) {
		return r, fmt.Errorf("unknown method %q (want one of %s)", rs.Method, strings.Join(methods, ", "))
	}
	if strings.TrimSpace(rs.Path) == "" {
		return r, errors.New(`"path" is required`)
	}
	var err error
	if r.expr, err = fhirpath.Parse(rs.Path); err != nil {
		return r, fmt.Errorf("path %q does not compile: %w", rs.Path, err)
	}
	if m := memberTail.FindStringSubmatch(rs.Path); m != nil {
		if p, err := fhirpath.Parse(m[1]); err == nil {
			r.parent, r.member = p, m[2]
			if simplePath.MatchString(m[1]) {
				steps := strings.Split(m[1], ".")
				if model.HasType(steps[0]) {
					r.lead, r.steps = steps[0], steps[1:]
				}
			}
		}
	}
	if m := leadType.FindStringSubmatch(rs.Path); m != nil && model.IsResource(m[1]) {
		if m[1] != "Resource" && m[1] != "DomainResource" {
			r.only = m[1]
		}
	}
	if m := fastForm.FindStringSubmatch(rs.Path); m != nil {
		if !model.HasType(m[1]) {
			return r, fmt.Errorf("path %q: %s is not a FHIR type", rs.Path, m[1])
		}
		r.fastType, r.member = m[1], m[2]
	}
	switch rs.Method {
	case "generalize":
		r.to, _ = rs.Params["to"].(string)
		switch r.to {
		case "zip3", "year", "ageBand":
		default:
			return r, fmt.Errorf(`generalize needs params.to "zip3", "year" or "ageBand", not %q`, r.to)
		}
	case "perturb":
		if _, ok := number(rs.Params["span"]); !ok {
			return r, errors.New("perturb needs a numeric params.span")
		}
		switch k, _ := rs.Params["kind"].(string); k {
		case "", "fixed", "proportional":
		default:
			return r, fmt.Errorf(`perturb params.kind must be "fixed" or "proportional", not %q`, k)
		}
	case "substitute":
		if _, ok := rs.Params["value"]; !ok {
			return r, errors.New("substitute needs params.value")
		}
	}
	return r, nil
}

// ruleLines returns the line on which each element of "rules" starts.
func ruleLines(data []byte) []int {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil
		}
		if key != "rules" {
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return nil
			}
			continue
		}
		if t, err := dec.Token(); err != nil || t != json.Delim('[') {
			return nil
		}
		var lines []int
		for dec.More() {
			off := dec.InputOffset()
			// The offset is before the separator and blanks: skip them.
			for off < int64(len(data)) && strings.ContainsRune(", \t\r\n", rune(data[off])) {
				off++
			}
			lines = append(lines, lineAt(data, off))
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return lines
			}
		}
		return lines
	}
	return nil
}

func lineAt(data []byte, off int64) int {
	off = min(max(off, 0), int64(len(data)))
	return bytes.Count(data[:off], []byte{'\n'}) + 1
}
