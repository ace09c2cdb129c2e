package fhirpath

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustJSON(t testing.TB, s string) any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

const obsJSON = `{"resourceType":"Observation","id":"o1","status":"final",
 "code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}],"text":"Heart rate"},
 "subject":{"reference":"Patient/p1"},"performer":[{"reference":"https://x.org/fhir/Practitioner/pr1/_history/2"},{"reference":"#c1"}],
 "contained":[{"resourceType":"Organization","id":"c1","name":"Lab"}],
 "effectiveDateTime":"2021-03-04T05:06:07Z","valueQuantity":{"value":72,"unit":"beats/minute","system":"http://unitsofmeasure.org","code":"/min"},
 "extension":[{"url":"http://e/a","valueString":"A"},{"url":"http://e/b","valueAge":{"value":3,"code":"a","system":"http://unitsofmeasure.org"}}],
 "note":[{"text":"one"},{"text":"two"}],
 "_status":{"extension":[{"url":"http://e/s","valueCode":"x"}]}}`

// render prints a collection compactly for comparisons: value@type.
func render(col Collection) string {
	parts := make([]string, len(col))
	for i, n := range col {
		v := n.Value()
		switch x := v.(type) {
		case map[string]any:
			v = fmt.Sprintf("{%d}", len(x))
		case Temporal:
			v = x.String()
		}
		parts[i] = fmt.Sprintf("%v@%s", v, n.Type())
	}
	return strings.Join(parts, " ")
}

func TestEvaluate(t *testing.T) {
	obs := mustJSON(t, obsJSON)
	tests := []struct {
		expr, want string
	}{
		{"Observation.value", "{4}@Quantity"},
		{"Observation.value.value", "72@decimal"},
		{"Observation.value as Quantity", "{4}@Quantity"},
		{"Observation.value as Period", ""},
		{"Observation.value.is(Quantity)", "true@System.Boolean"},
		{"Observation.effective", "2021-03-04T05:06:07Z@dateTime"},
		{"Observation.effective > @2021-03-04T05:06:06Z", "true@System.Boolean"},
		{"Observation.effective = @2021", ""},
		{"Observation.code.coding.code", "8867-4@code"},
		{"Observation.status", "final@code"},
		{"Observation.status.extension('http://e/s').value", "x@code"},
		{"Observation.extension('http://e/b').value is Quantity", "true@System.Boolean"},
		{"Observation.extension('http://e/b').value.as(Quantity)", "{3}@Age"},
		{"Observation.extension.where(url = 'http://e/a').value", "A@string"},
		{"Observation.subject.where(resolve() is Patient)", "{1}@Reference"},
		{"Observation.performer.resolve()", "{2}@Practitioner {3}@Organization"},
		{"Observation.performer.resolve().ofType(Organization).name", "Lab@string"},
		{"Observation.note.text | Observation.note.text", "one@markdown two@markdown"},
		{"Observation.note.text.combine(Observation.note.text).count()", "4@System.Integer"},
		{"Observation.note[1].text", "two@markdown"},
		{"Observation.note[5].text", ""},
		{"Observation.note.select(text + '!')", "one!@System.String two!@System.String"},
		{"Observation.note.where($this.text.startsWith('t')).text", "two@markdown"},
		{"Observation.note.text.where($index = 0)", "one@markdown"},
		{"Observation.missing.exists()", "false@System.Boolean"},
		{"Observation.missing = 1", ""},
		{"Observation.missing.empty() and true", "true@System.Boolean"},
		{"{} and false", "false@System.Boolean"},
		{"{} or true", "true@System.Boolean"},
		{"{} or false", ""},
		{"false implies {}", "true@System.Boolean"},
		{"true xor {}", ""},
		{"(true | false).allTrue()", "false@System.Boolean"},
		{"7 div 2 + 7 mod 2 * 10", "13@System.Integer"},
		{"7 / 2", "3.5@System.Decimal"},
		{"1 / 0", ""},
		{"-(3).abs()", "-3@System.Integer"},
		{"'abc'.substring(1, 5) & 'x'", "bcx@System.String"},
		{"'a,b'.split(',').join('-')", "a-b@System.String"},
		{"'Hello'.matches('^H.*o$') and 'Hello'.replaceMatches('l+', 'L') = 'HeLo'", "true@System.Boolean"},
		{"@2020-01-31 + 1 day", "2020-02-01@System.Date"},
		{"@2020-01-31 + 1 month", "2020-02-29@System.Date"},
		{"@2020-03-31 - 13 months", "2019-02-28@System.Date"},
		{"@2020-02-29 + 1 year", "2021-02-28@System.Date"},
		{"@2020-05 + 1 month", "2020-06@System.Date"},
		{"@2020-01-01T10:00:00Z - 2 hours", "2020-01-01T08:00:00Z@System.DateTime"},
		{"5 'mg' = 0.005 'g'", "true@System.Boolean"},
		{"5 'mg' > 4 'kg'", "false@System.Boolean"},
		{"'5.5'.toDecimal() + '2'.toInteger()", "7.5@System.Decimal"},
		{"iif(Observation.status = 'final', 'done', 'open')", "done@System.String"},
		{"Observation.descendants().ofType(Coding).code", "8867-4@code"},
		{"(1 | 2 | 3).aggregate($this + $total, 0)", "6@System.Integer"},
		{"%resource.id", "o1@string"},
		{"%ucum", "http://unitsofmeasure.org@System.String"},
		{"Observation.code.text ~ 'HEART  rate'", "true@System.Boolean"},
		{"1 in (1 | 2) and (1 | 2) contains 3", "false@System.Boolean"},
		{"Observation.value.hasValue() or Observation.status.hasValue()", "true@System.Boolean"},
		{"`Observation`.status", "final@code"},
		{"Resource.id", "o1@string"},
		{"Patient.id", ""},
	}
	for _, tc := range tests {
		t.Run(tc.expr, func(t *testing.T) {
			e, err := Parse(tc.expr)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.Evaluate(obs)
			if err != nil {
				t.Fatal(err)
			}
			if r := render(got); r != tc.want {
				t.Fatalf("got %q, want %q", r, tc.want)
			}
		})
	}
}

func TestEvaluateErrors(t *testing.T) {
	obs := mustJSON(t, obsJSON)
	tests := []struct{ expr, wantErr string }{
		{"Observation.note.text.single()", "single() on 2 items"},
		{"Observation.note.text + 'x'", "needs single items"},
		{"'a' < 1", "cannot compare"},
		{"%nope", "undefined environment variable"},
		{"Observation.status.as(strung)", "unknown type"},
		{"'x'.matches('(')", "bad regular expression"},
		{"(1|2).not()", "expected a single boolean"},
	}
	for _, tc := range tests {
		t.Run(tc.expr, func(t *testing.T) {
			_, err := MustParse(tc.expr).Evaluate(obs)
			if err == nil || !errors.Is(err, ErrEvaluation) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want ErrEvaluation containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, src := range []string{"", "Patient.", "1 +", "(1", "'abc", "a.b(", "foo()", "first(1)", "@20x", "a[1", "%", "$that", "1 is", "a /* b", strings.Repeat("(", 1000) + "1" + strings.Repeat(")", 1000)} {
		t.Run(src, func(t *testing.T) {
			if e, err := Parse(src); err == nil {
				t.Fatalf("Parse(%q) = %v, want error", src, e)
			}
		})
	}
}

func TestOptions(t *testing.T) {
	obs := mustJSON(t, obsJSON)
	patient := mustJSON(t, `{"resourceType":"Patient","id":"p1","active":true}`)
	resolver := func(_ context.Context, ref string) (any, error) {
		if ref == "Patient/p1" {
			return patient, nil
		}
		if ref == "Patient/broken" {
			return nil, errors.New("backend down")
		}
		return nil, nil
	}
	got, err := MustParse("Observation.subject.resolve().active").Evaluate(obs, WithResolver(resolver))
	if err != nil || render(got) != "true@boolean" {
		t.Fatalf("resolver: %v %v", render(got), err)
	}
	broken := mustJSON(t, `{"resourceType":"Observation","subject":{"reference":"Patient/broken"}}`)
	if _, err := MustParse("Observation.subject.resolve()").Evaluate(broken, WithResolver(resolver)); err == nil || !strings.Contains(err.Error(), "backend down") {
		t.Fatalf("resolver error not surfaced: %v", err)
	}
	got, err = MustParse("%limit + 1").Evaluate(obs, WithEnv("limit", 41))
	if err != nil || render(got) != "42@System.Integer" {
		t.Fatalf("env: %v %v", render(got), err)
	}
	got, err = MustParse("%resource.id").Evaluate(obs, WithResource(patient))
	if err != nil || render(got) != "p1@string" {
		t.Fatalf("resource: %v %v", render(got), err)
	}
	now := time.Date(2022, 2, 3, 4, 5, 6, 0, time.UTC)
	got, err = MustParse("today()").Evaluate(nil, WithNow(now))
	if err != nil || render(got) != "2022-02-03@System.Date" {
		t.Fatalf("today: %v %v", render(got), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	big := make([]any, 5000)
	for i := range big {
		big[i] = map[string]any{"a": json.Number("1")}
	}
	if _, err := MustParse("select(a).where($this = 1).count()").Evaluate(big, WithContext(ctx)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled evaluation: %v", err)
	}
}

func TestRepeatTerminatesOnCycles(t *testing.T) {
	q := decodeFile(t, filepath.Join("testdata", "examples", "Questionnaire-f201.json"))
	got, err := MustParse("Questionnaire.repeat(item).linkId.count()").Evaluate(q)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := got[0].Value().(int64); n != 9 {
		t.Fatalf("repeat(item) found %d items, want 9 (3 top-level items + 6 nested)", n)
	}
	// repeat over a value that yields itself must stop, not loop.
	if _, err := MustParse("(1).repeat($this)").Evaluate(nil); err != nil {
		t.Fatal(err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"Patient.name.where(use = 'official').given.first()", "(Observation.value as Quantity).value > 5 'mg'", "@2014-01-01T10:00:00.123+01:00 + 1 day", "iif(a, b, c) | %resource.x[0]", "'a\\u0041'.matches('[a-z]+') implies -1.5.abs() div 2", "`x`.y.ofType(FHIR.string)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := Parse(src)
		if err == nil && e.String() != src {
			t.Fatalf("String() = %q", e.String())
		}
	})
}

func FuzzEvaluate(f *testing.F) {
	for _, s := range []string{"Observation.value as Quantity", "descendants().count()", "Observation.note.text.aggregate($total & $this, '')", "repeat(children())", "Observation.effective + 1 year > now()", "extension('http://e/b').value.toQuantity('mo')", "Observation.code.coding.code.toChars().distinct()"} {
		f.Add(s)
	}
	var obs any
	dec := json.NewDecoder(strings.NewReader(obsJSON))
	dec.UseNumber()
	if err := dec.Decode(&obs); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := Parse(src)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, _ = e.Evaluate(obs, WithContext(ctx))
	})
}

func BenchmarkEvaluate(b *testing.B) {
	obs := decodeFile(b, filepath.Join("testdata", "examples", "Observation-example.json"))
	for _, src := range []string{"Observation.value as Quantity", "Observation.code"} {
		e := MustParse(src)
		b.Run(src, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				out, err := e.Evaluate(obs)
				if err != nil || len(out) != 1 {
					b.Fatalf("%v %v", out, err)
				}
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("(Observation.value as Quantity) | (Observation.component.value as Quantity)"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConcurrentEvaluate shares one Expression between goroutines, as the
// index extractor does; run with -race to check it stays read-only.
func TestConcurrentEvaluate(t *testing.T) {
	obs := mustJSON(t, obsJSON)
	e := MustParse("Observation.note.where(text.startsWith('t')).text | (Observation.value as Quantity).value.toString()")
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for range 200 {
				got, err := e.Evaluate(obs)
				if err != nil {
					errs <- err
					return
				}
				if r := render(got); r != "two@markdown 72@System.String" {
					errs <- fmt.Errorf("got %q", r)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
