package fhirpath

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

type tokKind uint8

const (
	tEOF tokKind = iota
	tIdent
	tDelimIdent // `name`: never a keyword
	tString
	tNumber
	tTemporal
	tExtConst // %name
	tSpecial  // $this, $index, $total
	tOp
)

type token struct {
	kind tokKind
	text string
	pos  int
}

// lex splits src into tokens. It rejects unterminated strings and comments
// and unknown characters with an error naming the offset.
func lex(src string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
			i++
		case strings.HasPrefix(src[i:], "//"):
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case strings.HasPrefix(src[i:], "/*"):
			end := strings.Index(src[i+2:], "*/")
			if end < 0 {
				return nil, fmt.Errorf("fhirpath: unterminated comment at %d", i)
			}
			i += end + 4
		case isIdentStart(c):
			j := i + 1
			for j < len(src) && isIdentPart(src[j]) {
				j++
			}
			toks = append(toks, token{tIdent, src[i:j], i})
			i = j
		case c == '`' || c == '\'':
			s, n, err := lexQuoted(src[i:], c)
			if err != nil {
				return nil, fmt.Errorf("fhirpath: at %d: %w", i, err)
			}
			k := tString
			if c == '`' {
				k = tDelimIdent
			}
			toks = append(toks, token{k, s, i})
			i += n
		case c >= '0' && c <= '9':
			j := i
			for j < len(src) && src[j] >= '0' && src[j] <= '9' {
				j++
			}
			if j+1 < len(src) && src[j] == '.' && src[j+1] >= '0' && src[j+1] <= '9' {
				j++
				for j < len(src) && src[j] >= '0' && src[j] <= '9' {
					j++
				}
			}
			toks = append(toks, token{tNumber, src[i:j], i})
			i = j
		case c == '@':
			n := lexTemporal(src[i+1:])
			if n == 0 {
				return nil, fmt.Errorf("fhirpath: bad date/time literal at %d", i)
			}
			toks = append(toks, token{tTemporal, src[i+1 : i+1+n], i})
			i += 1 + n
		case c == '%':
			if i+1 < len(src) && (src[i+1] == '`' || src[i+1] == '\'') {
				s, n, err := lexQuoted(src[i+1:], src[i+1])
				if err != nil {
					return nil, fmt.Errorf("fhirpath: at %d: %w", i, err)
				}
				toks = append(toks, token{tExtConst, s, i})
				i += 1 + n
				continue
			}
			j := i + 1
			for j < len(src) && isIdentPart(src[j]) {
				j++
			}
			if j == i+1 {
				return nil, fmt.Errorf("fhirpath: empty external constant at %d", i)
			}
			toks = append(toks, token{tExtConst, src[i+1 : j], i})
			i = j
		case c == '$':
			j := i + 1
			for j < len(src) && isIdentPart(src[j]) {
				j++
			}
			name := src[i:j]
			if name != "$this" && name != "$index" && name != "$total" {
				return nil, fmt.Errorf("fhirpath: unknown special variable %q at %d", name, i)
			}
			toks = append(toks, token{tSpecial, name, i})
			i = j
		default:
			for _, op := range []string{"<=", ">=", "!=", "!~"} {
				if strings.HasPrefix(src[i:], op) {
					toks = append(toks, token{tOp, op, i})
					i += 2
					goto next
				}
			}
			if strings.IndexByte(".,()[]{}+-*/&|=~<>", c) >= 0 {
				toks = append(toks, token{tOp, string(c), i})
				i++
				continue
			}
			return nil, fmt.Errorf("fhirpath: unexpected character %q at %d", c, i)
		next:
		}
	}
	toks = append(toks, token{tEOF, "", len(src)})
	return toks, nil
}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentPart(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

func lexQuoted(s string, q byte) (string, int, error) {
	var sb strings.Builder
	i := 1
	for i < len(s) {
		c := s[i]
		if c == q {
			return sb.String(), i + 1, nil
		}
		if c != '\\' {
			sb.WriteByte(c)
			i++
			continue
		}
		if i+1 >= len(s) {
			break
		}
		e := s[i+1]
		i += 2
		switch e {
		case '\'', '"', '`', '\\', '/':
			sb.WriteByte(e)
		case 'f':
			sb.WriteByte('\f')
		case 'n':
			sb.WriteByte('\n')
		case 'r':
			sb.WriteByte('\r')
		case 't':
			sb.WriteByte('\t')
		case 'u':
			if i+4 > len(s) {
				return "", 0, fmt.Errorf("bad unicode escape")
			}
			v, err := strconv.ParseUint(s[i:i+4], 16, 32)
			if err != nil {
				return "", 0, fmt.Errorf("bad unicode escape: %w", err)
			}
			sb.WriteRune(rune(v))
			i += 4
		default:
			return "", 0, fmt.Errorf("unknown escape \\%c", e)
		}
	}
	return "", 0, fmt.Errorf("unterminated %c-quoted text", q)
}

// lexTemporal returns the length of the date/time literal at the start of
// s (after '@'), 0 if there is none. Validation happens in ParseTemporal.
func lexTemporal(s string) int {
	i := 0
	digits := func(n int) bool {
		if i+n > len(s) {
			return false
		}
		for k := 0; k < n; k++ {
			if s[i+k] < '0' || s[i+k] > '9' {
				return false
			}
		}
		i += n
		return true
	}
	timePart := func() {
		if !digits(2) {
			return
		}
		if i < len(s) && s[i] == ':' {
			i++
			if !digits(2) {
				i--
				return
			}
			if i < len(s) && s[i] == ':' {
				i++
				if !digits(2) {
					i--
					return
				}
				if i+1 < len(s) && s[i] == '.' && s[i+1] >= '0' && s[i+1] <= '9' {
					i++
					for i < len(s) && s[i] >= '0' && s[i] <= '9' {
						i++
					}
				}
			}
		}
	}
	if strings.HasPrefix(s, "T") {
		i = 1
		timePart()
		if i == 1 {
			return 0
		}
		// A zone on a time literal is an error that ParseTemporal reports.
		i += zoneLen(s[i:])
		return i
	}
	if !digits(4) {
		return 0
	}
	if i+2 < len(s) && s[i] == '-' {
		i++
		if !digits(2) {
			return i - 1
		}
		if i+2 < len(s)+0 && s[i] == '-' {
			i++
			if !digits(2) {
				return i - 1
			}
		}
	}
	if i < len(s) && s[i] == 'T' {
		i++
		timePart()
		i += zoneLen(s[i:])
	}
	return i
}

func zoneLen(s string) int {
	if strings.HasPrefix(s, "Z") {
		return 1
	}
	if len(s) >= 6 && (s[0] == '+' || s[0] == '-') && s[3] == ':' {
		return 6
	}
	return 0
}

// Parse compiles a FHIRPath expression. The result is immutable and may be
// evaluated concurrently and repeatedly.
func Parse(src string) (*Expression, error) {
	if !utf8.ValidString(src) {
		return nil, fmt.Errorf("fhirpath: expression is not valid UTF-8")
	}
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks, src: src}
	root, err := p.expr(0)
	if err != nil {
		return nil, err
	}
	if p.peek().kind != tEOF {
		return nil, p.errf("unexpected %q", p.peek().text)
	}
	return &Expression{src: src, root: root}, nil
}

// MustParse is Parse for expressions known at compile time; it panics on error.
func MustParse(src string) *Expression {
	e, err := Parse(src)
	if err != nil {
		panic(err)
	}
	return e
}

type parser struct {
	toks  []token
	pos   int
	src   string
	depth int
}

// maxDepth bounds recursion so that hostile input cannot exhaust the stack.
const maxDepth = 200

func (p *parser) peek() token { return p.toks[p.pos] }
func (p *parser) next() token {
	t := p.toks[p.pos]
	if p.pos < len(p.toks)-1 {
		p.pos++
	}
	return t
}

func (p *parser) errf(format string, args ...any) error {
	return fmt.Errorf("fhirpath: parse %q at %d: %s", p.src, p.peek().pos, fmt.Sprintf(format, args...))
}

func (p *parser) isOp(text string) bool {
	t := p.peek()
	return t.kind == tOp && t.text == text
}

func (p *parser) expect(text string) error {
	if !p.isOp(text) {
		return p.errf("expected %q, found %q", text, p.peek().text)
	}
	p.next()
	return nil
}

// Binding powers, loosest first, following the FHIRPath grammar.
const (
	precImplies = iota + 1
	precOr
	precAnd
	precMembership
	precEquality
	precInequality
	precUnion
	precType
	precAdditive
	precMultiplicative
	precUnary
)

func binaryPrec(t token) int {
	switch t.kind {
	case tOp:
		switch t.text {
		case "*", "/":
			return precMultiplicative
		case "+", "-", "&":
			return precAdditive
		case "|":
			return precUnion
		case "<", "<=", ">", ">=":
			return precInequality
		case "=", "~", "!=", "!~":
			return precEquality
		}
	case tIdent:
		switch t.text {
		case "div", "mod":
			return precMultiplicative
		case "is", "as":
			return precType
		case "in", "contains":
			return precMembership
		case "and":
			return precAnd
		case "or", "xor":
			return precOr
		case "implies":
			return precImplies
		}
	}
	return 0
}

func (p *parser) expr(minPrec int) (node, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxDepth {
		return nil, p.errf("expression nested too deeply")
	}
	left, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		prec := binaryPrec(t)
		if prec == 0 || prec <= minPrec {
			return left, nil
		}
		p.next()
		if prec == precType {
			ts, err := p.typeSpec()
			if err != nil {
				return nil, err
			}
			left = &typeOpNode{op: t.text, left: left, typ: ts}
			continue
		}
		// implies is right-associative; all others are left-associative.
		next := prec
		if prec == precImplies {
			next = prec - 1
		}
		right, err := p.expr(next)
		if err != nil {
			return nil, err
		}
		left, err = newBinary(t.text, left, right)
		if err != nil {
			return nil, p.errf("%v", err)
		}
	}
}

func (p *parser) typeSpec() (typeSpec, error) {
	t := p.next()
	if t.kind != tIdent && t.kind != tDelimIdent {
		return typeSpec{}, p.errf("expected a type name, found %q", t.text)
	}
	name := t.text
	if p.isOp(".") && (p.toks[p.pos+1].kind == tIdent || p.toks[p.pos+1].kind == tDelimIdent) {
		p.next()
		name += "." + p.next().text
	}
	return parseTypeName(name), nil
}

func (p *parser) unary() (node, error) {
	if p.isOp("-") || p.isOp("+") {
		op := p.next().text
		operand, err := p.expr(precUnary)
		if err != nil {
			return nil, err
		}
		if op == "+" {
			return operand, nil
		}
		return &negateNode{operand: operand}, nil
	}
	return p.postfix()
}

func (p *parser) postfix() (node, error) {
	n, err := p.term()
	if err != nil {
		return nil, err
	}
	for {
		switch {
		case p.isOp("."):
			p.next()
			t := p.next()
			if t.kind != tIdent && t.kind != tDelimIdent {
				return nil, p.errf("expected a name after '.', found %q", t.text)
			}
			if t.kind == tIdent && p.isOp("(") {
				fn, err := p.call(t.text)
				if err != nil {
					return nil, err
				}
				fn.target = n
				n = fn
				continue
			}
			n = &memberNode{target: n, name: t.text}
		case p.isOp("["):
			p.next()
			idx, err := p.expr(0)
			if err != nil {
				return nil, err
			}
			if err := p.expect("]"); err != nil {
				return nil, err
			}
			n = &indexNode{target: n, index: idx}
		default:
			return n, nil
		}
	}
}

func (p *parser) call(name string) (*callNode, error) {
	p.next() // (
	var args []node
	if !p.isOp(")") {
		for {
			a, err := p.expr(0)
			if err != nil {
				return nil, err
			}
			args = append(args, a)
			if p.isOp(",") {
				p.next()
				continue
			}
			break
		}
	}
	if err := p.expect(")"); err != nil {
		return nil, err
	}
	f, ok := functionTable[name]
	if !ok {
		return nil, p.errf("unknown function %s()", name)
	}
	if len(args) < f.minArgs || len(args) > f.maxArgs {
		return nil, p.errf("%s() takes %d to %d arguments, got %d", name, f.minArgs, f.maxArgs, len(args))
	}
	c := &callNode{name: name, fn: f.fn, args: args}
	if f.typeArg {
		if len(args) != 1 {
			return nil, p.errf("%s() needs a type", name)
		}
		ts, ok := typeFromNode(args[0])
		if !ok {
			return nil, p.errf("%s() argument must be a type name", name)
		}
		c.typ = ts
	}
	return c, nil
}

// typeFromNode reads a type specifier written as a function argument
// (ofType(Quantity), is(FHIR.string)).
func typeFromNode(n node) (typeSpec, bool) {
	switch v := n.(type) {
	case *memberNode:
		if v.target == nil {
			return parseTypeName(v.name), true
		}
		if t, ok := v.target.(*memberNode); ok && t.target == nil {
			return parseTypeName(t.name + "." + v.name), true
		}
	}
	return typeSpec{}, false
}

func (p *parser) term() (node, error) {
	t := p.peek()
	switch t.kind {
	case tNumber:
		p.next()
		if u := p.peek(); u.kind == tString || (u.kind == tIdent && calendarKeyword(u.text)) {
			p.next()
			v, err := strconv.ParseFloat(t.text, 64)
			if err != nil {
				return nil, p.errf("bad number %q", t.text)
			}
			return &literalNode{val: Collection{sysNode(Quantity{Value: v, Unit: u.text}, TypeQuantity)}}, nil
		}
		if strings.Contains(t.text, ".") {
			v, err := strconv.ParseFloat(t.text, 64)
			if err != nil {
				return nil, p.errf("bad number %q", t.text)
			}
			return &literalNode{val: Collection{{value: v, typ: TypeDecimal, text: t.text}}}, nil
		}
		v, err := strconv.ParseInt(t.text, 10, 64)
		if err != nil {
			return nil, p.errf("integer %q out of range", t.text)
		}
		return &literalNode{val: Collection{sysNode(v, TypeInteger)}}, nil
	case tString:
		p.next()
		return &literalNode{val: Collection{sysNode(t.text, TypeString)}}, nil
	case tTemporal:
		p.next()
		kind, typ, text := KindDate, TypeDate, t.text
		switch {
		case strings.HasPrefix(text, "T"):
			kind, typ, text = KindTime, TypeTime, text[1:]
		case strings.Contains(text, "T"):
			kind, typ = KindDateTime, TypeDateTime
		}
		v, err := ParseTemporal(text, kind)
		if err != nil {
			return nil, p.errf("%v", err)
		}
		return &literalNode{val: Collection{sysNode(v, typ)}}, nil
	case tExtConst:
		p.next()
		return &varNode{name: t.text}, nil
	case tSpecial:
		p.next()
		return &specialNode{name: t.text}, nil
	case tIdent, tDelimIdent:
		p.next()
		if t.kind == tIdent {
			switch t.text {
			case "true", "false":
				return &literalNode{val: Collection{sysNode(t.text == "true", TypeBoolean)}}, nil
			}
			if p.isOp("(") {
				return p.call(t.text)
			}
		}
		return &memberNode{name: t.text}, nil
	case tOp:
		switch t.text {
		case "(":
			p.next()
			e, err := p.expr(0)
			if err != nil {
				return nil, err
			}
			if err := p.expect(")"); err != nil {
				return nil, err
			}
			return e, nil
		case "{":
			p.next()
			if err := p.expect("}"); err != nil {
				return nil, err
			}
			return &literalNode{}, nil
		}
	}
	return nil, p.errf("unexpected %q", t.text)
}

func calendarKeyword(s string) bool {
	switch s {
	case "year", "years", "month", "months", "week", "weeks", "day", "days",
		"hour", "hours", "minute", "minutes", "second", "seconds", "millisecond", "milliseconds":
		return true
	}
	return false
}
