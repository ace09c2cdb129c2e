package conformance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// segment is one step of a path inside a resource: an element name, or an
// index into the array named by the previous segment.
type segment struct {
	name  string
	index int // -1 for a name
}

// path is a location inside the body, rendered as FHIRPath only when an
// issue needs it, because the resource type prefix is known only once the
// whole top-level object has been read.
type path []segment

func (p path) field(name string) path {
	return append(p[:len(p):len(p)], segment{name: name, index: -1})
}

func (p path) at(i int) path {
	return append(p[:len(p):len(p)], segment{index: i})
}

// fhirPath renders p as a FHIRPath-style expression rooted at root (the
// resource type), e.g. "Bundle.entry[2].resource.subject".
func (p path) fhirPath(root string) string {
	var b strings.Builder
	b.WriteString(root)
	for _, s := range p {
		if s.index >= 0 {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.index))
			b.WriteByte(']')
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.name)
	}
	return b.String()
}

// located is an issue whose expression is still a path.
type located struct {
	severity, code, diagnostics string
	at                          path
}

// strictDecoder decodes a body while enforcing the rules of FHIR JSON that
// encoding/json and the validators after it accept silently: FHIR forbids
// duplicate keys, null, empty objects, arrays and strings.
//
// FHIR allows one use of null: a placeholder in a primitive array whose
// "_name" partner carries extensions (["a", null] with [null, {...}]).
// Neither the official schema nor google/fhir/go accepts it, so it is
// rejected here with a message that says so, instead of failing later with
// a confusing type error.
type strictDecoder struct {
	dec      *json.Decoder
	maxDepth int
	issues   []located
	// rootType is the top-level resourceType as soon as it has been read,
	// so that a body that breaks off later still gets rooted expressions.
	rootType string
}

// errAbort stops decoding after an issue that makes the rest unreadable
// (syntax error, excessive depth); the issue itself is already recorded.
var errAbort = errors.New("conformance: decoding aborted")

// decodeStrictTokens is the reference implementation of decodeStrict, built
// on encoding/json's tokenizer. decodeStrict uses it for the bodies that its
// fast scanner gives up on (syntax errors, excessive depth, trailing data),
// so that those get exactly the diagnostics encoding/json gives them.
func decodeStrictTokens(body []byte, maxDepth int) (obj map[string]any, issues []located, rootType string) {
	d := &strictDecoder{dec: json.NewDecoder(bytes.NewReader(body)), maxDepth: maxDepth}
	d.dec.UseNumber()
	tok, err := d.dec.Token()
	if err != nil {
		d.syntax(nil, err)
		return nil, d.issues, ""
	}
	if delim, ok := tok.(json.Delim); !ok || delim != '{' {
		d.add("structure", fmt.Sprintf("a resource must be a JSON object, found %s", describe(tok)), nil)
		return nil, d.issues, ""
	}
	obj, err = d.object(nil, 1)
	if err != nil {
		return nil, d.issues, d.rootType
	}
	if _, err := d.dec.Token(); !errors.Is(err, io.EOF) {
		d.add("structure", "unexpected data after the resource's closing brace", nil)
		return nil, d.issues, d.rootType
	}
	return obj, d.issues, d.rootType
}

func (d *strictDecoder) add(code, diag string, at path) {
	if len(d.issues) >= maxIssues {
		return
	}
	d.issues = append(d.issues, located{severity: "error", code: code, diagnostics: diag, at: at})
}

func (d *strictDecoder) syntax(at path, err error) {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		d.add("structure", fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, err), at)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		d.add("structure", "invalid JSON: unexpected end of input", at)
	default:
		d.add("structure", fmt.Sprintf("invalid JSON: %v", err), at)
	}
}

// value decodes the value that begins with tok.
func (d *strictDecoder) value(tok json.Token, at path, depth int) (any, error) {
	switch t := tok.(type) {
	case json.Delim:
		if depth+1 > d.maxDepth {
			// Reported on the whole body: the path itself would be the
			// hundred-level monster.
			d.add("too-costly", fmt.Sprintf("JSON nesting deeper than %d levels", d.maxDepth), nil)
			return nil, errAbort
		}
		if t == '{' {
			return d.object(at, depth+1)
		}
		return d.array(at, depth+1)
	case string:
		if t == "" {
			d.add("value", "empty strings are not allowed in FHIR JSON", at)
		}
		return t, nil
	default:
		return t, nil
	}
}

func (d *strictDecoder) object(at path, depth int) (map[string]any, error) {
	obj := map[string]any{}
	for {
		tok, err := d.dec.Token()
		if err != nil {
			d.syntax(at, err)
			return nil, errAbort
		}
		if delim, ok := tok.(json.Delim); ok && delim == '}' {
			break
		}
		key, ok := tok.(string)
		if !ok { // unreachable with encoding/json, kept so bad input never panics
			d.add("structure", "object key is not a string", at)
			return nil, errAbort
		}
		child := at.field(key)
		tok, err = d.dec.Token()
		if err != nil {
			d.syntax(child, err)
			return nil, errAbort
		}
		if tok == nil {
			d.add("structure", fmt.Sprintf("null is not allowed as the value of %q", key), child)
			continue
		}
		v, err := d.value(tok, child, depth)
		if err != nil {
			return nil, err
		}
		if depth == 1 && key == "resourceType" {
			d.rootType, _ = v.(string)
		}
		if _, dup := obj[key]; dup {
			d.add("structure", fmt.Sprintf("duplicate key %q", key), child)
		}
		obj[key] = v
	}
	if len(obj) == 0 {
		d.add("structure", "empty objects are not allowed in FHIR JSON", at)
	}
	return obj, nil
}

func (d *strictDecoder) array(at path, depth int) ([]any, error) {
	arr := []any{}
	for {
		tok, err := d.dec.Token()
		if err != nil {
			d.syntax(at, err)
			return nil, errAbort
		}
		if delim, ok := tok.(json.Delim); ok && delim == ']' {
			break
		}
		if tok == nil {
			d.add("not-supported", "null array elements are not supported (including placeholders for primitive extensions)", at.at(len(arr)))
			arr = append(arr, nil)
			continue
		}
		v, err := d.value(tok, at.at(len(arr)), depth)
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
	}
	if len(arr) == 0 {
		d.add("structure", "empty arrays are not allowed in FHIR JSON", at)
	}
	return arr, nil
}

// describe names a top-level token for a diagnostic without echoing input.
func describe(tok json.Token) string {
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			return "an array"
		}
		return "a delimiter"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	default:
		return "an unexpected token"
	}
}
