package resources

import (
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// normalize folds a string for case- and accent-insensitive matching, the
// way search.html asks of string parameters: decomposed (NFD) so accents
// become separate marks that are dropped, lower-cased, punctuation turned
// into spaces and runs of white space collapsed. The same function is used
// on indexed values and on search values, so a prefix of the folded search
// value matches exactly when the spec says it should ("eve" ~ "Évelyne").
func normalize(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range norm.NFD.String(s) {
		switch {
		case unicode.Is(unicode.Mn, r):
			continue
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			r = unicode.ToLower(r)
			if space && b.Len() > 0 {
				b.WriteByte(' ')
			}
			space = false
			if f, ok := foldTable[r]; ok {
				b.WriteString(f)
			} else {
				b.WriteRune(r)
			}
		default:
			// White space and punctuation both separate words.
			space = true
		}
	}
	return b.String()
}

// foldTable maps the letters that NFD does not decompose to their usual
// ASCII spelling (a constant table, read only).
var foldTable = map[rune]string{
	'ø': "o", 'đ': "d", 'ð': "d", 'ł': "l", 'ß': "ss", 'æ': "ae", 'œ': "oe", 'ı': "i", 'þ': "th",
}

// Normalize is the folding of string and token text entries (normalize),
// for callers that build entries of a resource they wrote themselves
// (auth/audit's AuditEvents) and must fold them exactly as Index does.
func Normalize(s string) string { return normalize(s) }
