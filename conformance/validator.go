package conformance

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"
)

// Limits that keep one hostile body from costing more than a large honest one.
const (
	// DefaultMaxBytes is far above the largest Synthea patient bundle (~1.3 MB).
	DefaultMaxBytes = 32 << 20
	// DefaultMaxDepth: real R4 resources nest fewer than 20 levels; a
	// Bundle of resources with contained resources and extensions stays far below 100.
	DefaultMaxDepth = 100
	// maxIssues bounds the report: a body with a million faults gets the
	// first ones and a note, not a response larger than itself.
	maxIssues = 500
)

// Issue is one finding, shaped like an OperationOutcome.issue.
type Issue struct {
	// Severity is "fatal", "error", "warning" or "information".
	Severity string
	// Code is a FHIR issue-type code: "structure", "required", "value",
	// "code-invalid", "invariant", "not-supported", "too-costly", "timeout", "exception".
	Code        string
	Diagnostics string
	// Expression is a FHIRPath-style location, e.g. "Observation.status" or
	// "Bundle.entry[2].resource.subject"; empty when the issue concerns the whole body.
	Expression string
}

// Parsed is the decoded body. It is valid only when Validate reported no
// error-severity issue.
type Parsed struct {
	Type string // resourceType
	ID   string // the resource's id, empty if absent
	// Resource is the body decoded with json.Decoder.UseNumber, so that
	// decimals keep their text (1.50 stays "1.50").
	Resource map[string]any
}

// HasErrors reports whether any issue has severity "error" or "fatal".
func HasErrors(issues []Issue) bool {
	for _, is := range issues {
		if is.Severity == "error" || is.Severity == "fatal" {
			return true
		}
	}
	return false
}

// Validator validates R4 JSON bodies. It is safe for concurrent use; the
// schema of each resource type is compiled the first time it is needed.
type Validator struct {
	schemas  *schemaSet
	fhir     *jsonformat.Unmarshaller
	maxBytes int
	maxDepth int
	log      *slog.Logger
}

// NewValidator loads the embedded R4 definitions.
func NewValidator() (*Validator, error) {
	schemas, err := newSchemaSet()
	if err != nil {
		return nil, err
	}
	u, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		return nil, fmt.Errorf("conformance: creating R4 unmarshaller: %w", err)
	}
	u.MaxNestingDepth = DefaultMaxDepth
	return &Validator{
		schemas:  schemas,
		fhir:     u,
		maxBytes: DefaultMaxBytes,
		maxDepth: DefaultMaxDepth,
		log:      slog.Default().With("component", "conformance"),
	}, nil
}

// idPattern is R4's id datatype.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9\-\.]{1,64}$`)

// Validate checks body as one FHIR R4 resource (a Bundle or Parameters
// included, with everything nested in it). Structural problems of the JSON
// stop validation early; otherwise the schema and google/fhir/go each run
// once over every resource of the body, and their findings are merged,
// one issue per expression.
func (v *Validator) Validate(ctx context.Context, body []byte) (Parsed, []Issue) {
	if err := ctx.Err(); err != nil {
		return Parsed{}, []Issue{{Severity: "error", Code: "timeout", Diagnostics: fmt.Sprintf("validation not started: %v", err)}}
	}
	if len(body) > v.maxBytes {
		return Parsed{}, []Issue{{Severity: "error", Code: "too-costly",
			Diagnostics: fmt.Sprintf("body of %d bytes exceeds the limit of %d", len(body), v.maxBytes)}}
	}
	res, strict, rootType := decodeStrict(body, v.maxDepth)
	parsed := Parsed{Type: rootType, Resource: res}
	if res != nil {
		parsed.ID, _ = res["id"].(string)
	}
	rs := &run{v: v, ctx: ctx, seen: map[string]bool{}}
	for _, l := range strict {
		// Not deduplicated: a key given twice, once empty, has two faults.
		rs.issues = append(rs.issues, Issue{Severity: l.severity, Code: l.code, Diagnostics: l.diagnostics, Expression: l.at.fhirPath(parsed.Type)})
	}
	if res == nil || HasErrors(rs.issues) {
		return parsed, rs.issues
	}
	switch rt, present := res["resourceType"]; {
	case !present:
		rs.add(Issue{Severity: "error", Code: "required", Diagnostics: "resourceType is missing", Expression: "resourceType"})
		return parsed, rs.issues
	case parsed.Type == "" || !IsResourceType(parsed.Type):
		rs.add(Issue{Severity: "error", Code: "not-supported", Diagnostics: fmt.Sprintf("unknown resource type %s", quoteJSON(rt)), Expression: "resourceType"})
		return parsed, rs.issues
	}

	top := &piece{res: res, root: parsed.Type, raw: body}
	rs.pieces = append(rs.pieces, top)
	rs.resource(res, parsed.Type, nil, top)

	for _, p := range rs.pieces {
		if err := ctx.Err(); err != nil {
			rs.add(Issue{Severity: "error", Code: "timeout", Diagnostics: fmt.Sprintf("validation interrupted: %v", err)})
			return parsed, rs.issues
		}
		if p.skip {
			continue
		}
		issues, err := runGoogle(v.fhir, p)
		if err != nil {
			v.log.ErrorContext(ctx, "semantic validation failed", "expression", p.root, "error", err)
			rs.add(Issue{Severity: "error", Code: "exception", Diagnostics: err.Error(), Expression: p.root})
			continue
		}
		for _, is := range issues {
			rs.add(is)
		}
	}
	return parsed, rs.issues
}

// run is the state of one Validate call.
type run struct {
	v      *Validator
	ctx    context.Context
	issues []Issue
	seen   map[string]bool // expressions that already carry an error
	pieces []*piece
}

// add records an issue unless an earlier pass already reported an error at
// the same expression: the schema and google/fhir/go often see the same
// fault, and one clear issue per location serves the client better.
func (r *run) add(is Issue) {
	if len(r.issues) > maxIssues {
		return
	}
	if len(r.issues) == maxIssues {
		r.issues = append(r.issues, Issue{Severity: "error", Code: "too-costly",
			Diagnostics: fmt.Sprintf("more than %d issues; the rest are not reported", maxIssues)})
		return
	}
	isErr := is.Severity == "error" || is.Severity == "fatal"
	if isErr && r.seen[is.Expression] {
		return
	}
	if isErr {
		r.seen[is.Expression] = true
	}
	r.issues = append(r.issues, is)
}

func (r *run) addLocated(root string, ls []located) {
	for _, l := range ls {
		r.add(Issue{Severity: l.severity, Code: l.code, Diagnostics: l.diagnostics, Expression: l.at.fhirPath(root)})
	}
}

// resource validates one resource (top-level or nested) against the schema
// of its type and walks into the resources nested in it. p is the piece
// that google/fhir/go will see this resource in.
func (r *run) resource(res map[string]any, rootType string, at path, p *piece) {
	rt, _ := res["resourceType"].(string)
	if id, ok := res["id"].(string); ok && !idPattern.MatchString(id) {
		r.add(Issue{Severity: "error", Code: "value",
			Diagnostics: "id must be 1 to 64 characters among A-Z, a-z, 0-9, '-' and '.'",
			Expression:  at.field("id").fhirPath(rootType)})
	}
	if s, err := r.v.schemas.forType(rt); err != nil {
		r.v.log.ErrorContext(r.ctx, "schema unavailable", "type", rt, "error", err)
		r.add(Issue{Severity: "error", Code: "exception", Diagnostics: err.Error(), Expression: at.fhirPath(rootType)})
	} else if !r.v.schemas.quick.certain(rt, res) {
		// Only jsonschema explains a fault, in the words clients have seen.
		if err := s.Validate(res); err != nil {
			r.addLocated(rootType, schemaIssues(err, res, at))
		}
	}

	if list, ok := res["contained"].([]any); ok {
		p.dirty = true
		for i, c := range list {
			r.nested(c, rootType, at.field("contained").at(i))
		}
	}
	switch rt {
	case "Bundle":
		entries, _ := res["entry"].([]any)
		for i, e := range entries {
			em, ok := e.(map[string]any)
			if !ok {
				continue // the schema reported it
			}
			eAt := at.field("entry").at(i)
			if nr, ok := em["resource"]; ok {
				r.nestedInPiece(nr, rootType, eAt.field("resource"), p)
			}
			if resp, ok := em["response"].(map[string]any); ok {
				if oc, ok := resp["outcome"]; ok {
					r.nestedInPiece(oc, rootType, eAt.field("response").field("outcome"), p)
				}
			}
		}
	case "Parameters":
		r.parameters(res["parameter"], rootType, at.field("parameter"), p)
	}
}

func (r *run) parameters(v any, rootType string, at path, p *piece) {
	params, _ := v.([]any)
	for i, pv := range params {
		pm, ok := pv.(map[string]any)
		if !ok {
			continue
		}
		if nr, ok := pm["resource"]; ok {
			p.dirty = true
			r.nested(nr, rootType, at.at(i).field("resource"))
		}
		if part, ok := pm["part"]; ok {
			r.parameters(part, rootType, at.at(i).field("part"), p)
		}
	}
}

// nestedInPiece validates a nested resource that google/fhir/go sees inline,
// inside the piece p (Bundle entries).
func (r *run) nestedInPiece(v any, rootType string, at path, p *piece) {
	res, ok := r.checkNested(v, rootType, at)
	if !ok {
		// google/fhir/go would fail the whole piece on it and report
		// nothing else: the issue is already recorded, skip the piece.
		p.skip = true
		return
	}
	r.resource(res, rootType, at, p)
}

// nested validates a resource that google/fhir/go must see as a piece of its
// own (contained, or inside Parameters).
func (r *run) nested(v any, rootType string, at path) {
	res, ok := r.checkNested(v, rootType, at)
	if !ok {
		return
	}
	np := &piece{res: res, at: at, root: at.fhirPath(rootType)}
	r.pieces = append(r.pieces, np)
	r.resource(res, rootType, at, np)
}

// checkNested dispatches on resourceType, which the schema's permissive
// ResourceList placeholder leaves to us.
func (r *run) checkNested(v any, rootType string, at path) (map[string]any, bool) {
	res, ok := v.(map[string]any)
	if !ok {
		r.add(Issue{Severity: "error", Code: "structure", Diagnostics: "a nested resource must be a JSON object", Expression: at.fhirPath(rootType)})
		return nil, false
	}
	rt, present := res["resourceType"]
	name, _ := rt.(string)
	switch {
	case !present:
		r.add(Issue{Severity: "error", Code: "required", Diagnostics: "resourceType is missing", Expression: at.field("resourceType").fhirPath(rootType)})
		return nil, false
	case !IsResourceType(name):
		r.add(Issue{Severity: "error", Code: "not-supported", Diagnostics: fmt.Sprintf("unknown resource type %s", quoteJSON(rt)), Expression: at.field("resourceType").fhirPath(rootType)})
		return nil, false
	}
	return res, true
}

// quoteJSON renders a decoded resourceType for a diagnostic; anything but a
// string is named by its kind, so that a huge object is never echoed back.
func quoteJSON(v any) string {
	switch t := v.(type) {
	case string:
		if len(t) > 64 {
			t = t[:64] + "..."
		}
		return fmt.Sprintf("%q", t)
	case map[string]any:
		return "(an object)"
	case []any:
		return "(an array)"
	default:
		return fmt.Sprintf("%v", t)
	}
}
