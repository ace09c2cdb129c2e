package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// EncodeResource serializes decoded FHIR JSON compactly with "resourceType"
// first in every object (readers and humans expect it there; encoding/json
// would sort it among the other keys). Numbers are json.Number and are
// written exactly as they were read, so 1.50 stays 1.50.
func EncodeResource(v any) ([]byte, error) { return encodeResourceSized(v, 1024) }

// encodeResourceSized is EncodeResource with room for size bytes first.
func encodeResourceSized(v any, size int) ([]byte, error) {
	var b bytes.Buffer
	b.Grow(size)
	if err := encodeValue(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func encodeValue(b *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case string:
		encodeString(b, x)
	case json.Number:
		if !plainNumber(string(x)) && !json.Valid([]byte(x)) {
			return fmt.Errorf("invalid number %q", string(x))
		}
		b.WriteString(string(x))
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("unsupported number %v", x)
		}
		b.WriteString(strconv.FormatFloat(x, 'f', -1, 64))
	case int:
		b.WriteString(strconv.Itoa(x))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case json.RawMessage:
		// Stored resources embedded in Bundles: written as stored, already
		// in this encoder's form.
		b.Write(x)
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := encodeValue(b, e); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case map[string]any:
		// resourceType, id and meta lead, as in the specification's own
		// examples; the rest follow in a stable order.
		var small [32]string
		keys := small[:0]
		for k, val := range x {
			// FHIR JSON has no empty arrays or objects (json.html): an
			// element without content is left out, so a Bundle with no
			// match has no "entry" at all.
			if k != "resourceType" && k != "id" && k != "meta" && !isEmptyJSON(val) {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		b.WriteByte('{')
		first := true
		if rt, ok := x["resourceType"]; ok {
			b.WriteString(`"resourceType":`)
			if err := encodeValue(b, rt); err != nil {
				return err
			}
			first = false
		}
		for _, k := range [...]string{"id", "meta"} {
			if val, ok := x[k]; ok && !isEmptyJSON(val) {
				if err := encodeMember(b, &first, k, val); err != nil {
					return err
				}
			}
		}
		for _, k := range keys {
			if err := encodeMember(b, &first, k, x[k]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	default:
		// Values built by this package (Bundles, outcomes) only use the
		// cases above; anything else goes through encoding/json.
		raw, err := json.Marshal(x)
		if err != nil {
			return fmt.Errorf("encoding %T: %w", x, err)
		}
		b.Write(raw)
	}
	return nil
}

// encodeMember writes "k":v, after a comma unless it is the first.
func encodeMember(b *bytes.Buffer, first *bool, k string, v any) error {
	if !*first {
		b.WriteByte(',')
	}
	*first = false
	encodeString(b, k)
	b.WriteByte(':')
	if err := encodeValue(b, v); err != nil {
		return fmt.Errorf("%s: %w", k, err)
	}
	return nil
}

// plainNumber reports whether s is a JSON number as RFC 8259 writes one
// (no blanks): the common case of the json.Valid check, without it.
func plainNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i, n = i+1, n+1
		}
		return n
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		digits()
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

func isEmptyJSON(v any) bool {
	switch x := v.(type) {
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

const hexDigits = "0123456789abcdef"

// encodeString writes a JSON string without encoding/json's HTML escaping,
// so that narrative XHTML stays readable.
func encodeString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b.WriteString(s[start:i])
		switch c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteString(`\u00`)
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		}
		start = i + 1
	}
	b.WriteString(s[start:])
	b.WriteByte('"')
}

// DecodeJSON decodes one JSON value keeping numbers as json.Number.
func DecodeJSON(raw []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("trailing data after the JSON value")
	}
	return v, nil
}
