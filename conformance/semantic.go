package conformance

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/fhir/go/jsonformat"
)

// piece is one resource handed to google/fhir/go on its own. The library
// walks Bundle entries itself, but it cannot parse resources inside
// Parameters, and it parses contained resources without validating their
// required elements or reference targets (they become opaque Any protos).
// Those resources are therefore cut out of their parent ("excised") and
// validated as pieces of their own, so every resource is still parsed once.
type piece struct {
	res   map[string]any
	at    path   // where the resource sits in the body
	root  string // expression of the resource, e.g. "Bundle.entry[0].resource.contained[1]"
	raw   []byte // the original bytes, usable only for an unexcised top-level body
	dirty bool   // something was excised from res: raw cannot be used
	skip  bool   // holds a nested resource of unknown type, already reported
}

// googleIssue is the part of google/fhir/go's internal UnmarshalError that we
// read (through reflection, since its package is internal).
type googleIssue struct {
	path, details, diagnostics string
}

// runGoogle validates one piece and returns issues with full expressions.
func runGoogle(u *jsonformat.Unmarshaller, p *piece) ([]Issue, error) {
	body := p.raw
	if p.dirty || body == nil {
		var err error
		if body, err = json.Marshal(excise(p.res)); err != nil {
			return nil, fmt.Errorf("conformance: re-encoding %s for semantic validation: %w", p.root, err)
		}
	}
	rep := &collector{}
	_, err := u.UnmarshalWithErrorReporter(body, rep)
	var out []Issue
	if err != nil {
		for _, gi := range unmarshalErrors(err) {
			out = append(out, parseIssue(p.root, gi))
		}
	}
	for _, gi := range rep.errs {
		out = append(out, validationIssue(p.root, gi, "error"))
	}
	for _, gi := range rep.warns {
		out = append(out, validationIssue(p.root, gi, "warning"))
	}
	return out, nil
}

// collector receives google/fhir/go's validation findings (required
// elements, reference targets, primitive rules), which arrive only when
// parsing succeeded.
type collector struct {
	errs, warns []googleIssue
}

func (c *collector) ReportValidationError(elementPath string, err error) error {
	c.errs = append(c.errs, googleIssue{path: elementPath, details: stripLocation(err.Error())})
	return nil
}

func (c *collector) ReportValidationWarning(elementPath string, err error) error {
	c.warns = append(c.warns, googleIssue{path: elementPath, details: stripLocation(err.Error())})
	return nil
}

// stripLocation removes the `error at "path": ` prefix that the library
// puts in front of its messages: the path becomes the issue's expression.
func stripLocation(msg string) string {
	if strings.HasPrefix(msg, "error at ") {
		if i := strings.Index(msg, `": `); i >= 0 {
			return msg[i+3:]
		}
	}
	return msg
}

// unmarshalErrors reads the list of parse errors. The library's error types
// live in an internal package, so their exported fields are read by
// reflection; anything unexpected falls back to the error text.
func unmarshalErrors(err error) []googleIssue {
	v := reflect.ValueOf(err)
	var out []googleIssue
	read := func(e reflect.Value) bool {
		for e.Kind() == reflect.Pointer || e.Kind() == reflect.Interface {
			if e.IsNil() {
				return false
			}
			e = e.Elem()
		}
		if e.Kind() != reflect.Struct {
			return false
		}
		p, d, g := e.FieldByName("Path"), e.FieldByName("Details"), e.FieldByName("Diagnostics")
		if p.Kind() != reflect.String || d.Kind() != reflect.String || g.Kind() != reflect.String {
			return false
		}
		out = append(out, googleIssue{path: p.String(), details: d.String(), diagnostics: g.String()})
		return true
	}
	switch {
	case v.Kind() == reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			if !read(v.Index(i)) {
				return []googleIssue{{details: err.Error()}}
			}
		}
		if len(out) == 0 {
			return []googleIssue{{details: err.Error()}}
		}
		return out
	case read(v):
		return out
	default:
		return []googleIssue{{details: stripLocation(err.Error())}}
	}
}

var multipleValues = regexp.MustCompile(`multiple values for (\w+) field`)

var missingField = regexp.MustCompile(`^missing required field "([^"]+)"`)

func parseIssue(root string, gi googleIssue) Issue {
	expr := rebase(root, gi.path)
	code := "value"
	diag := gi.details
	switch {
	case gi.details == "unknown field":
		if name, err := strconv.Unquote(gi.diagnostics); err == nil {
			expr = joinExpr(expr, name)
			diag = fmt.Sprintf("unknown element %q", name)
		}
		code = "structure"
	case strings.HasPrefix(gi.details, "cannot accept multiple values"):
		code = "structure"
		if m := multipleValues.FindStringSubmatch(gi.details); m != nil {
			expr = joinExpr(expr, m[1]+"[x]")
			diag = fmt.Sprintf("choice element %s[x] given more than once", m[1])
		}
	case gi.details == "unknown resource type":
		code = "not-supported"
		diag = fmt.Sprintf("unknown resource type %s", gi.diagnostics)
	case strings.Contains(gi.details, "code type mismatch"):
		code = "code-invalid"
	case strings.HasPrefix(gi.details, "missing required field"):
		code = "required"
	case gi.diagnostics != "":
		// Diagnostics echo the offending value (e.g. `found "2021-02-30"`),
		// which helps the client; the REST layer decides what to log.
		diag = gi.details + ": " + gi.diagnostics
	}
	return Issue{Severity: "error", Code: code, Diagnostics: strings.ToValidUTF8(diag, "\uFFFD"), Expression: validExpr(expr)}
}

func validationIssue(root string, gi googleIssue, severity string) Issue {
	expr := rebase(root, gi.path)
	code := "invariant"
	switch m := missingField.FindStringSubmatch(gi.details); {
	case m != nil:
		expr = joinExpr(expr, m[1])
		code = "required"
	case strings.HasPrefix(gi.details, "invalid reference"):
		code = "value"
	case strings.HasPrefix(gi.details, "invalid"):
		code = "value"
	}
	return Issue{Severity: severity, Code: code, Diagnostics: strings.ToValidUTF8(gi.details, "\uFFFD"), Expression: validExpr(expr)}
}

// validExpr replaces invalid UTF-8 in an expression built from
// google/fhir/go's paths, which keep the body's raw bytes, byte by byte as
// the strict decoder does for element names: the expression then names the
// same element as the schema's issues do, and stays printable.
func validExpr(expr string) string {
	if utf8.ValidString(expr) {
		return expr
	}
	var b strings.Builder
	for _, r := range expr {
		b.WriteRune(r) // an invalid byte comes out of range as U+FFFD
	}
	return b.String()
}

func joinExpr(expr, name string) string {
	if expr == "" {
		return name
	}
	return expr + "." + name
}

// rebase turns a google/fhir/go path ("Bundle.entry[1].resource.observation.subject",
// with the nested resource's type inserted after "resource" or "outcome") into an
// expression under root ("Bundle.entry[1].resource.subject").
func rebase(root, gpath string) string {
	if gpath == "" {
		return root
	}
	parts := strings.Split(gpath, ".")
	out := []string{root}
	for i := 1; i < len(parts); i++ {
		if (parts[i-1] == "resource" || parts[i-1] == "outcome") && isResourceTypeFold(parts[i]) {
			continue
		}
		out = append(out, parts[i])
	}
	return strings.Join(out, ".")
}

// isResourceTypeFold matches the library's inserted type names, which come
// capitalised from the parser and lower-case from the validator.
func isResourceTypeFold(s string) bool {
	if s == "" {
		return false
	}
	return IsResourceType(strings.ToUpper(s[:1]) + s[1:])
}

// excise returns a copy of res without what google/fhir/go must not see:
// contained resources and resources inside Parameters, at any depth of
// Bundle nesting. Those are validated as pieces of their own.
func excise(res map[string]any) map[string]any {
	out := make(map[string]any, len(res))
	rt, _ := res["resourceType"].(string)
	for k, v := range res {
		switch {
		case k == "contained":
			continue
		case rt == "Parameters" && k == "parameter":
			out[k] = exciseParameters(v)
		case rt == "Bundle" && k == "entry":
			out[k] = exciseEntries(v)
		default:
			out[k] = v
		}
	}
	return out
}

func exciseParameters(v any) any {
	params, ok := v.([]any)
	if !ok {
		return v
	}
	out := make([]any, len(params))
	for i, p := range params {
		pm, ok := p.(map[string]any)
		if !ok {
			out[i] = p
			continue
		}
		cp := make(map[string]any, len(pm))
		for k, pv := range pm {
			switch k {
			case "resource":
				continue
			case "part":
				cp[k] = exciseParameters(pv)
			default:
				cp[k] = pv
			}
		}
		out[i] = cp
	}
	return out
}

func exciseEntries(v any) any {
	entries, ok := v.([]any)
	if !ok {
		return v
	}
	out := make([]any, len(entries))
	for i, e := range entries {
		em, ok := e.(map[string]any)
		if !ok {
			out[i] = e
			continue
		}
		cp := make(map[string]any, len(em))
		for k, ev := range em {
			cp[k] = ev
		}
		if r, ok := em["resource"].(map[string]any); ok {
			cp["resource"] = excise(r)
		}
		if resp, ok := em["response"].(map[string]any); ok {
			if oc, ok := resp["outcome"].(map[string]any); ok {
				rcp := make(map[string]any, len(resp))
				for k, rv := range resp {
					rcp[k] = rv
				}
				rcp["outcome"] = excise(oc)
				cp["response"] = rcp
			}
		}
		out[i] = cp
	}
	return out
}
