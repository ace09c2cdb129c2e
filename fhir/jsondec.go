package fhir

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/anodyne-fhir/anodyne/storage"
)

// decodeStored decodes a stored resource for the output path (emit). It
// gives exactly what decodeRecord gives (objects map[string]any, arrays
// []any, numbers json.Number, strings, bools, nil) in one pass: the
// record's bytes become one string and every string and number without
// escapes is a slice of it, so a resource costs its maps and arrays and
// little else. Input this single pass does not expect (an escape it leaves
// to encoding/json is the only slow case; invalid JSON, nesting deeper than
// encoding/json allows) goes to decodeRecord, which then decides and words
// the error. FuzzDecodeStored holds the two to the same answer.
func decodeStored(rec storage.Record) (map[string]any, error) {
	d := storedDecoder{s: string(rec.JSON)}
	d.ws()
	if d.i < len(d.s) && d.s[d.i] == '{' {
		v, ok := d.value(0)
		d.ws()
		if ok && d.i == len(d.s) {
			return v.(map[string]any), nil
		}
	}
	return decodeRecord(rec)
}

// storedDecoder is the state of one decodeStored call.
type storedDecoder struct {
	s string
	i int
}

// maxStoredDepth is encoding/json's nesting limit: deeper input is left
// to it (and refused there).
const maxStoredDepth = 10000

func (d *storedDecoder) ws() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// value decodes the value at d.i (no blanks before it); ok is false for
// anything the caller must leave to encoding/json.
func (d *storedDecoder) value(depth int) (any, bool) {
	if d.i >= len(d.s) {
		return nil, false
	}
	switch c := d.s[d.i]; {
	case c == '{':
		return d.object(depth + 1)
	case c == '[':
		return d.array(depth + 1)
	case c == '"':
		s, ok := d.str()
		return s, ok
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	}
	return nil, false
}

func (d *storedDecoder) literal(lit string) bool {
	if len(d.s)-d.i < len(lit) || d.s[d.i:d.i+len(lit)] != lit {
		return false
	}
	d.i += len(lit)
	return true
}

func (d *storedDecoder) object(depth int) (any, bool) {
	if depth > maxStoredDepth {
		return nil, false
	}
	d.i++ // {
	m := map[string]any{}
	d.ws()
	if d.i < len(d.s) && d.s[d.i] == '}' {
		d.i++
		return m, true
	}
	for {
		if d.i >= len(d.s) || d.s[d.i] != '"' {
			return nil, false
		}
		k, ok := d.str()
		if !ok {
			return nil, false
		}
		d.ws()
		if d.i >= len(d.s) || d.s[d.i] != ':' {
			return nil, false
		}
		d.i++
		d.ws()
		v, ok := d.value(depth)
		if !ok {
			return nil, false
		}
		m[k] = v
		d.ws()
		if d.i >= len(d.s) {
			return nil, false
		}
		switch d.s[d.i] {
		case ',':
			d.i++
			d.ws()
		case '}':
			d.i++
			return m, true
		default:
			return nil, false
		}
	}
}

func (d *storedDecoder) array(depth int) (any, bool) {
	if depth > maxStoredDepth {
		return nil, false
	}
	d.i++ // [
	a := make([]any, 0, 2)
	d.ws()
	if d.i < len(d.s) && d.s[d.i] == ']' {
		d.i++
		return a, true
	}
	for {
		v, ok := d.value(depth)
		if !ok {
			return nil, false
		}
		a = append(a, v)
		d.ws()
		if d.i >= len(d.s) {
			return nil, false
		}
		switch d.s[d.i] {
		case ',':
			d.i++
			d.ws()
		case ']':
			d.i++
			return a, true
		default:
			return nil, false
		}
	}
}

// str decodes the string literal at d.i. One without escapes whose bytes
// are valid UTF-8 is a slice of the input; any other is unquoted by
// encoding/json, so escapes, surrogates and invalid UTF-8 (replaced by
// U+FFFD) read as they always have.
func (d *storedDecoder) str() (string, bool) {
	start := d.i + 1
	ascii, escaped := true, false
	i := start
	for ; i < len(d.s); i++ {
		c := d.s[i]
		if c == '"' {
			break
		}
		switch {
		case c == '\\':
			escaped = true
			i++ // the escaped byte cannot end the literal
		case c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	if i >= len(d.s) {
		return "", false
	}
	d.i = i + 1
	s := d.s[start:i]
	if !escaped && (ascii || utf8.ValidString(s)) {
		return s, true
	}
	var out string
	if err := json.Unmarshal([]byte(d.s[start-1:i+1]), &out); err != nil {
		return "", false
	}
	return out, true
}

// number reads a JSON number (RFC 8259 grammar) as json.Number, exactly
// as written.
func (d *storedDecoder) number() (any, bool) {
	start := d.i
	i := d.i
	if d.s[i] == '-' {
		i++
	}
	switch {
	case i < len(d.s) && d.s[i] == '0':
		i++
	case i < len(d.s) && d.s[i] >= '1' && d.s[i] <= '9':
		i = d.digits(i)
	default:
		return nil, false
	}
	if i < len(d.s) && d.s[i] == '.' {
		j := d.digits(i + 1)
		if j == i+1 {
			return nil, false
		}
		i = j
	}
	if i < len(d.s) && (d.s[i] == 'e' || d.s[i] == 'E') {
		i++
		if i < len(d.s) && (d.s[i] == '+' || d.s[i] == '-') {
			i++
		}
		j := d.digits(i)
		if j == i {
			return nil, false
		}
		i = j
	}
	d.i = i
	return json.Number(d.s[start:i]), true
}

func (d *storedDecoder) digits(i int) int {
	for i < len(d.s) && d.s[i] >= '0' && d.s[i] <= '9' {
		i++
	}
	return i
}
