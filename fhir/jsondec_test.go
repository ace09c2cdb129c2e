package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

// storedSamples are JSON texts as the output path meets them: every
// resource of the Synthea bundles and R4 examples in testdata, each as
// the file wrote it and as the store holds it (encodeResource), and hand
// written cases for the corners of the grammar.
func storedSamples(t testing.TB) [][]byte {
	t.Helper()
	out := [][]byte{
		[]byte(`{}`),
		[]byte(` {"a" : [ ] , "b":{ } ,"c":[1,-0,0.5,1.50,-2e10,3E+2,4e-3,0e0]}` + "\n\t"),
		[]byte(`{"s":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00\ud800x\udc00","t":"é😀","u":"a\u0000b"}`),
		[]byte("{\"bad\":\"\xff\xfe ok \xc3\"}"),
		[]byte(`{"dup":1,"dup":"two","n":null,"t":true,"f":false,"a":[null,true,false,"x",{}]}`),
		[]byte(`{"deep":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`),
		[]byte(`{"deep":` + strings.Repeat("[", maxStoredDepth+1) + strings.Repeat("]", maxStoredDepth+1) + `}`),
		[]byte(`{"a":1}{"b":2}`), []byte(`{"a":01}`), []byte(`{"a":1.}`), []byte(`{"a":.5}`), []byte(`{"a":1e}`),
		[]byte(`{"a":-}`), []byte(`{"a":tru}`), []byte(`{"a":"x`), []byte(`{"a":"x\`), []byte(`{"a":"x` + "\n" + `"}`),
		[]byte(`{"a":1,}`), []byte(`{"a" 1}`), []byte(`{a:1}`), []byte(`[1]`), []byte(`"x"`), []byte(``), []byte(`{"a":[1,]}`),
		[]byte(`{"a":"\x"}`), []byte(`{"a":"\u12"}`), []byte(`{"a":1 2}`), []byte(`{"a":[1 2]}`),
	}
	files, _ := filepath.Glob("../testdata/synthea/*.json")
	examples, _ := filepath.Glob("../testdata/r4-examples/resources/*.json")
	files = append(files, examples...)
	slices.Sort(files)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, raw)
		v, err := DecodeJSON(raw)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		resources := []any{v}
		if m, _ := v.(map[string]any); m["resourceType"] == "Bundle" {
			for _, e := range m["entry"].([]any) {
				resources = append(resources, e.(map[string]any)["resource"])
			}
		}
		for _, r := range resources {
			stored, err := EncodeResource(r)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			out = append(out, stored)
		}
	}
	if len(out) < 300 {
		t.Fatalf("only %d samples: testdata missing?", len(out))
	}
	return out
}

// checkDecodeStored holds decodeStored to decodeRecord's answer: the same
// value, or an error where it errs.
func checkDecodeStored(t *testing.T, raw []byte) {
	rec := storage.Record{Type: "Observation", ID: "x", VersionID: 1, JSON: raw}
	want, wantErr := decodeRecord(rec)
	got, err := decodeStored(rec)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%.200q: error %v, decodeRecord's %v", raw, err, wantErr)
	}
	if err != nil {
		if err.Error() != wantErr.Error() {
			t.Fatalf("%.200q: error %q, decodeRecord's %q", raw, err, wantErr)
		}
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%.200q: decoded\n%#v\ndecodeRecord\n%#v", raw, got, want)
	}
}

func TestDecodeStoredMatchesDecoder(t *testing.T) {
	for _, raw := range storedSamples(t) {
		checkDecodeStored(t, raw)
	}
}

func FuzzDecodeStored(f *testing.F) {
	for _, raw := range storedSamples(f)[:40] {
		f.Add(raw)
	}
	f.Fuzz(checkDecodeStored)
}

// encodeResourceBefore is encodeResource as it was before the output
// path was made cheaper (a copy kept as the reference the new one must
// match byte for byte).
func encodeResourceBefore(v any) ([]byte, error) {
	var b bytes.Buffer
	var enc func(v any) error
	enc = func(v any) error {
		switch x := v.(type) {
		case nil:
			b.WriteString("null")
		case bool:
			b.WriteString(strconv.FormatBool(x))
		case string:
			encodeString(&b, x)
		case json.Number:
			if !json.Valid([]byte(x)) {
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
		case []any:
			b.WriteByte('[')
			for i, e := range x {
				if i > 0 {
					b.WriteByte(',')
				}
				if err := enc(e); err != nil {
					return err
				}
			}
			b.WriteByte(']')
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k, val := range x {
				if k != "resourceType" && k != "id" && k != "meta" && !isEmptyJSON(val) {
					keys = append(keys, k)
				}
			}
			slices.Sort(keys)
			for _, k := range [...]string{"meta", "id"} {
				if val, ok := x[k]; ok && !isEmptyJSON(val) {
					keys = slices.Insert(keys, 0, k)
				}
			}
			b.WriteByte('{')
			first := true
			if rt, ok := x["resourceType"]; ok {
				b.WriteString(`"resourceType":`)
				if err := enc(rt); err != nil {
					return err
				}
				first = false
			}
			for _, k := range keys {
				if !first {
					b.WriteByte(',')
				}
				first = false
				encodeString(&b, k)
				b.WriteByte(':')
				if err := enc(x[k]); err != nil {
					return fmt.Errorf("%s: %w", k, err)
				}
			}
			b.WriteByte('}')
		default:
			return fmt.Errorf("unexpected %T", x)
		}
		return nil
	}
	err := enc(v)
	return b.Bytes(), err
}

func TestEncodeResourceUnchanged(t *testing.T) {
	samples := storedSamples(t)
	var values []any
	for _, raw := range samples {
		if v, err := DecodeJSON(raw); err == nil {
			values = append(values, v)
		}
	}
	// Maps with more keys than the encoder's key array holds, numbers the
	// quick check refuses (json.Valid decides them), and bad numbers.
	wide := map[string]any{"resourceType": "Basic", "id": "w", "meta": map[string]any{"versionId": "1"}, "empty": []any{}}
	for i := range 70 {
		wide[fmt.Sprintf("k%02d", 69-i)] = json.Number(strconv.Itoa(i))
	}
	values = append(values, wide,
		map[string]any{"a": json.Number(" 1 "), "id": map[string]any{}},
		map[string]any{"a": json.Number("true")},
		map[string]any{"b": []any{json.Number("1.")}},
		map[string]any{"b": map[string]any{"c": json.Number("")}},
		map[string]any{"n": nil, "f": 1.5, "i": 3, "meta": []any{}})
	for _, v := range values {
		want, wantErr := encodeResourceBefore(v)
		got, err := EncodeResource(v)
		if (err != nil) != (wantErr != nil) || (err != nil && err.Error() != wantErr.Error()) {
			t.Fatalf("error %v, before %v", err, wantErr)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("encoded\n%s\nbefore\n%s", got, want)
		}
	}
}

// FuzzPlainNumber: the quick number check accepts only what json.Valid
// accepts, and every JSON number literal without blanks.
func FuzzPlainNumber(f *testing.F) {
	for _, s := range []string{"0", "-0", "1.50", "1e5", "-2E-3", "01", "1.", ".5", "1e", " 1", "true", "", "-", "1x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		valid := json.Valid([]byte(s))
		_, isNum := func() (any, bool) {
			d := storedDecoder{s: s}
			if s == "" || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) {
				return nil, false
			}
			v, ok := d.number()
			return v, ok && d.i == len(s)
		}()
		if got := plainNumber(s); got != isNum || (got && !valid) {
			t.Fatalf("plainNumber(%q) = %v; decoder's number %v, json.Valid %v", s, got, isNum, valid)
		}
	})
}

// benchStored is the research benchmark's pain Observation as stored.
const benchStored = `{"resourceType":"Observation","id":"o1","meta":{"lastUpdated":"2026-12-07T23:34:38.123Z","versionId":"1"},"category":[{"coding":[{"code":"vital-signs","system":"http://terminology.hl7.org/CodeSystem/observation-category"}]}],"code":{"coding":[{"code":"72514-3","display":"Pain severity","system":"http://loinc.org"}],"text":"Pain"},"effectiveDateTime":"2024-03-02T08:01:00Z","note":[{"text":"free text"}],"status":"final","subject":{"display":"Ana","reference":"Patient/p1"},"valueQuantity":{"code":"{score}","system":"http://unitsofmeasure.org","unit":"{score}","value":1}}`

// BenchmarkEmitCodec compares the output path's decode and encode of one
// stored Observation before (decodeRecord, the previous encoder) and now.
func BenchmarkEmitCodec(b *testing.B) {
	rec := storage.Record{Type: "Observation", ID: "o1", VersionID: 1, JSON: []byte(benchStored)}
	for _, c := range []struct {
		name   string
		decode func(storage.Record) (map[string]any, error)
		encode func(any) ([]byte, error)
	}{{"before", decodeRecord, encodeResourceBefore}, {"now", decodeStored, func(v any) ([]byte, error) { return encodeResourceSized(v, len(rec.JSON)+len(rec.JSON)/4) }}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m, err := c.decode(rec)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.encode(m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
