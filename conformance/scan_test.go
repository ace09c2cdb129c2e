package conformance

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// compareWithTokens checks the fast scanner against the token-based
// reference decoder on one body. It reports whether the scanner handled the
// body itself (false: decodeStrict fell back to the reference).
func compareWithTokens(t *testing.T, body []byte, maxDepth int) bool {
	t.Helper()
	s := scanner{data: body, maxDepth: maxDepth}
	obj, ok := s.document()
	wantObj, wantIssues, wantRoot := decodeStrictTokens(body, maxDepth)
	if !ok {
		return false
	}
	if !reflect.DeepEqual(obj, wantObj) {
		t.Errorf("%.80q: scanner decoded %v, reference %v", body, obj, wantObj)
	}
	if s.rootType != wantRoot {
		t.Errorf("%.80q: scanner root %q, reference %q", body, s.rootType, wantRoot)
	}
	if got, want := renderLocated(s.issues), renderLocated(wantIssues); got != want {
		t.Errorf("%.80q: scanner issues:%s\nreference issues:%s", body, got, want)
	}
	return true
}

func renderLocated(ls []located) string {
	var b strings.Builder
	for _, l := range ls {
		b.WriteString("\n  " + l.severity + " " + l.code + " " + l.at.fhirPath("R") + ": " + l.diagnostics)
	}
	return b.String()
}

func TestScannerMatchesTokenDecoder(t *testing.T) {
	tests := []struct {
		name, body string
		fast       bool // the scanner must handle it without falling back
	}{
		{"plain", `{"resourceType":"Patient","active":true,"deceasedBoolean":false}`, true},
		{"whitespace everywhere", " \t\r\n{ \"resourceType\" : \"Basic\" , \"a\" : [ 1 , 2 ] }\n ", true},
		{"numbers keep text", `{"a":[0,-0,1.50,-12.0e+10,3E-2,1e999,123456789012345678901234567890]}`, true},
		{"escapes", `{"a":"x\"y\\z\/\b\f\n\r\t\u00e9\ud83d\ude00"}`, true},
		{"escaped key", `{"resource\u0054ype":"Patient"}`, true},
		{"lone surrogate", `{"a":"\ud800x"}`, true},
		{"surrogates unpaired", `{"a":"\ud83d\u0041\udc00\ud83d","b":"\ud83d\ud83d\ude00","c":"\ud83d\\"}`, true},
		{"escapes with invalid utf-8", "{\"a\":\"\\n\xff\xc3\\t\xe2\x82\"}", true},
		{"uppercase hex", `{"a":"\u00C9\uD83D\uDE00"}`, true},
		{"raw utf-8", `{"a":"é中😀"}`, true},
		{"invalid utf-8", "{\"a\":\"\xff\xfe\",\"b\xc3\":1}", true},
		{"null member", `{"resourceType":"Patient","a":null}`, true},
		{"only null members", `{"a":{"b":null}}`, true},
		{"null in array", `{"a":[null,"x",null]}`, true},
		{"empty object", `{"a":{}}`, true},
		{"empty top-level object", `{}`, true},
		{"empty array", `{"a":[],"b":[[]]}`, true},
		{"empty strings", `{"":"","a":[""]}`, true},
		{"duplicates", `{"a":1,"a":"","a":null,"a":{"b":1,"b":2}}`, true},
		{"resourceType not a string", `{"resourceType":{"x":1}}`, true},
		{"nested resourceType is not the root", `{"a":{"resourceType":"Patient"}}`, true},
		{"many issues", `{"a":[` + strings.Repeat(`"",`, maxIssues+10) + `""]}`, true},

		{"empty body", ``, false},
		{"only spaces", `   `, false},
		{"top-level array", `[{"a":1}]`, false},
		{"top-level null", `null`, false},
		{"top-level string", `"Patient"`, false},
		{"trailing data", `{"a":1} x`, false},
		{"second object", `{"a":1}{"b":2}`, false},
		{"trailing comma", `{"a":1,}`, false},
		{"trailing comma in array", `{"a":[1,]}`, false},
		{"missing colon", `{"a" 1}`, false},
		{"missing value", `{"a":}`, false},
		{"bare word", `{"a":nul}`, false},
		{"literal run-on", `{"a":truex}`, false},
		{"leading zero", `{"a":01}`, false},
		{"lone minus", `{"a":-}`, false},
		{"dot without digits", `{"a":1.}`, false},
		{"exponent without digits", `{"a":1e+}`, false},
		{"plus sign", `{"a":+1}`, false},
		{"bad escape", `{"a":"\x"}`, false},
		{"quote escape", `{"a":"\'"}`, false},
		{"short second surrogate", `{"a":"\ud83d\ude0"}`, false},
		{"bad hex", `{"a":"\u00g1"}`, false},
		{"short unicode escape", `{"a":"\u12"}`, false},
		{"control character", "{\"a\":\"x\ny\"}", false},
		{"unterminated string", `{"a":"xyz`, false},
		{"escape at end", `{"a":"xyz\`, false},
		{"truncated", `{"resourceType":"Patient","name":[{"family":"a"`, false},
		{"single quotes", `{'a':1}`, false},
		{"non-string key", `{1:2}`, false},
		{"byte order mark", "\xef\xbb\xbf{\"a\":1}", false},
		{"too deep", `{"a":[[[[{"b":1}]]]]}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if fast := compareWithTokens(t, []byte(tt.body), 5); fast != tt.fast {
				t.Errorf("scanner handled it = %v, want %v", fast, tt.fast)
			}
		})
	}
}

// TestScannerOnTestData runs every stored body through both decoders. The
// well-formed ones must not fall back, or the fast path buys nothing: only
// the broken inputs that are not one JSON object, and the validator cases
// that test JSON syntax, may take the reference path.
func TestScannerOnTestData(t *testing.T) {
	notJSONObjects := map[string]bool{"not-an-object.json": true, "trailing-data.json": true, "truncated.json": true}
	var fallbacks []string
	n := 0
	for _, pattern := range []string{"testdata/valid/*.json", "testdata/broken/*.json", "testdata/examples/*.json",
		"testdata/synthea/*.json", "testdata/validator-cases/inputs/*.json"} {
		files, _ := filepath.Glob(pattern)
		for _, f := range files {
			n++
			if compareWithTokens(t, readFile(t, f), DefaultMaxDepth) {
				continue
			}
			fallbacks = append(fallbacks, filepath.Base(f))
			if !strings.Contains(pattern, "validator-cases") && !notJSONObjects[filepath.Base(f)] {
				t.Errorf("%s: the scanner fell back on a well-formed body", f)
			}
		}
	}
	if n < 300 {
		t.Fatalf("only %d test bodies found", n)
	}
	t.Logf("%d bodies, %d handled by the reference decoder: %v", n, len(fallbacks), fallbacks)
}

// FuzzDecodeStrict: go test -run '^$' -fuzz=FuzzDecodeStrict ./conformance
// Whatever the scanner accepts, it must decode and report exactly as the
// token-based reference does.
func FuzzDecodeStrict(f *testing.F) {
	for _, pattern := range []string{"testdata/valid/*.json", "testdata/broken/*.json"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			f.Add(readFile(f, file))
		}
	}
	f.Add([]byte(`{"a":[null,{"b":""},{"b":{}}],"a":"\u00e9\ud800","c":[1.5e3,-0]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		compareWithTokens(t, body, 8)
	})
}
