package conformance

import (
	"encoding/json"
	"fmt"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// decodeStrict decodes body into a JSON object (numbers as json.Number)
// while enforcing FHIR's JSON rules (see strictDecoder). It returns nil
// when the body cannot be read as one object at all.
//
// A hand-written single-pass scanner handles well-formed bodies, which are
// nearly all of them: encoding/json's Token API costs several times a plain
// decode. Whenever the scanner meets anything it does not handle itself (a
// syntax error, nesting beyond maxDepth, data after the object, a body that
// is not an object), the token-based reference decoder reruns on the whole
// body, so malformed input gets exactly the diagnostics it always had.
func decodeStrict(body []byte, maxDepth int) (map[string]any, []located, string) {
	s := scanner{data: body, maxDepth: maxDepth}
	if obj, ok := s.document(); ok {
		return obj, s.issues, s.rootType
	}
	return decodeStrictTokens(body, maxDepth)
}

// scanner is the fast path of decodeStrict. Every method returns false as
// soon as the input leaves the well-formed subset it handles; the caller
// then discards everything it produced.
type scanner struct {
	data     []byte
	pos      int
	maxDepth int
	issues   []located
	rootType string
	// stack is the path of the value being scanned; it is copied only when
	// an issue needs it, instead of allocating a path per key.
	stack path
}

func (s *scanner) add(code, diag string) {
	if len(s.issues) >= maxIssues {
		return
	}
	at := make(path, len(s.stack))
	copy(at, s.stack)
	s.issues = append(s.issues, located{severity: "error", code: code, diagnostics: diag, at: at})
}

// document scans the whole body: one object, then only whitespace.
func (s *scanner) document() (map[string]any, bool) {
	s.skipSpace()
	if s.pos >= len(s.data) || s.data[s.pos] != '{' {
		return nil, false
	}
	s.pos++
	obj, ok := s.object(1)
	if !ok {
		return nil, false
	}
	s.skipSpace()
	if s.pos != len(s.data) {
		return nil, false
	}
	return obj, true
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// object scans the members of an object whose '{' has been consumed; depth
// counts like strictDecoder.object (the top-level object is 1).
func (s *scanner) object(depth int) (map[string]any, bool) {
	obj := map[string]any{}
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		s.add("structure", "empty objects are not allowed in FHIR JSON")
		return obj, true
	}
	for {
		s.skipSpace()
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return nil, false
		}
		key, ok := s.str()
		if !ok {
			return nil, false
		}
		s.skipSpace()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return nil, false
		}
		s.pos++
		s.skipSpace()
		s.stack = append(s.stack, segment{name: key, index: -1})
		if s.literal("null") {
			s.add("structure", fmt.Sprintf("null is not allowed as the value of %q", key))
		} else {
			v, ok := s.value(depth)
			if !ok {
				return nil, false
			}
			if depth == 1 && key == "resourceType" {
				s.rootType, _ = v.(string)
			}
			if _, dup := obj[key]; dup {
				s.add("structure", fmt.Sprintf("duplicate key %q", key))
			}
			obj[key] = v
		}
		s.stack = s.stack[:len(s.stack)-1]
		s.skipSpace()
		if s.pos >= len(s.data) {
			return nil, false
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			continue
		case '}':
			s.pos++
		default:
			return nil, false
		}
		break
	}
	if len(obj) == 0 { // every member was null
		s.add("structure", "empty objects are not allowed in FHIR JSON")
	}
	return obj, true
}

// array scans the elements of an array whose '[' has been consumed.
func (s *scanner) array(depth int) ([]any, bool) {
	arr := []any{}
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		s.add("structure", "empty arrays are not allowed in FHIR JSON")
		return arr, true
	}
	for {
		s.skipSpace()
		s.stack = append(s.stack, segment{index: len(arr)})
		if s.literal("null") {
			s.add("not-supported", "null array elements are not supported (including placeholders for primitive extensions)")
			arr = append(arr, nil)
		} else {
			v, ok := s.value(depth)
			if !ok {
				return nil, false
			}
			arr = append(arr, v)
		}
		s.stack = s.stack[:len(s.stack)-1]
		s.skipSpace()
		if s.pos >= len(s.data) {
			return nil, false
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			continue
		case ']':
			s.pos++
			return arr, true
		default:
			return nil, false
		}
	}
}

// value scans a non-null value inside a container at depth; its path is on
// the stack.
func (s *scanner) value(depth int) (any, bool) {
	if s.pos >= len(s.data) {
		return nil, false
	}
	switch c := s.data[s.pos]; {
	case c == '{' || c == '[':
		if depth+1 > s.maxDepth {
			return nil, false
		}
		s.pos++
		if c == '{' {
			return s.object(depth + 1)
		}
		return s.array(depth + 1)
	case c == '"':
		str, ok := s.str()
		if ok && str == "" {
			s.add("value", "empty strings are not allowed in FHIR JSON")
		}
		return str, ok
	case c == 't':
		return true, s.literal("true")
	case c == 'f':
		return false, s.literal("false")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	default:
		return nil, false
	}
}

// literal consumes word if the input continues with it. What follows is
// checked by the caller, which expects a separator.
func (s *scanner) literal(word string) bool {
	if len(s.data)-s.pos < len(word) || string(s.data[s.pos:s.pos+len(word)]) != word {
		return false
	}
	s.pos += len(word)
	return true
}

// str scans a string whose opening quote is at s.pos. Plain strings are
// sliced; the others are unquoted as encoding/json does it (invalid UTF-8
// and lone surrogates become U+FFFD).
func (s *scanner) str() (string, bool) {
	start := s.pos + 1
	ascii := true
	for i := start; i < len(s.data); i++ {
		switch c := s.data[i]; {
		case c == '"':
			raw := s.data[start:i]
			if !ascii && !utf8.Valid(raw) {
				return s.unquote(start) // replaces the invalid bytes
			}
			s.pos = i + 1
			return string(raw), true
		case c == '\\':
			return s.unquote(start)
		case c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

// unquote decodes the string body starting at start, with escapes and
// invalid UTF-8, exactly as encoding/json's unquote does, and rejects what
// its scanner rejects.
func (s *scanner) unquote(start int) (string, bool) {
	b := make([]byte, 0, 64)
	for i := start; i < len(s.data); {
		c := s.data[i]
		switch {
		case c == '"':
			s.pos = i + 1
			return string(b), true
		case c < 0x20:
			return "", false
		case c == '\\':
			if i+1 >= len(s.data) {
				return "", false
			}
			i++
			switch e := s.data[i]; e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r, ok := hex4(s.data[i+1:])
				if !ok {
					return "", false
				}
				i += 4
				if utf16.IsSurrogate(r) {
					// A valid pair is consumed whole; anything else leaves
					// U+FFFD and scans what follows on its own.
					if i+2 < len(s.data) && s.data[i+1] == '\\' && s.data[i+2] == 'u' {
						if r2, ok := hex4(s.data[i+3:]); ok {
							if dec := utf16.DecodeRune(r, r2); dec != unicode.ReplacementChar {
								b = utf8.AppendRune(b, dec)
								i += 7
								continue
							}
						}
					}
					r = unicode.ReplacementChar
				}
				b = utf8.AppendRune(b, r)
			default:
				return "", false
			}
			i++
		case c < utf8.RuneSelf:
			b = append(b, c)
			i++
		default:
			r, size := utf8.DecodeRune(s.data[i:])
			b = utf8.AppendRune(b, r)
			i += size
		}
	}
	return "", false
}

// hex4 reads the four hex digits of a \u escape.
func hex4(p []byte) (rune, bool) {
	if len(p) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range p[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number scans a JSON number and keeps its text.
func (s *scanner) number() (any, bool) {
	start := s.pos
	if s.data[s.pos] == '-' {
		s.pos++
	}
	switch {
	case s.pos < len(s.data) && s.data[s.pos] == '0':
		s.pos++
	case s.digits() == 0:
		return nil, false
	}
	if s.pos < len(s.data) && s.data[s.pos] == '.' {
		s.pos++
		if s.digits() == 0 {
			return nil, false
		}
	}
	if s.pos < len(s.data) && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.data) && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			s.pos++
		}
		if s.digits() == 0 {
			return nil, false
		}
	}
	return json.Number(s.data[start:s.pos]), true
}

func (s *scanner) digits() int {
	n := 0
	for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
		s.pos++
		n++
	}
	return n
}
