package research_test

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkSearch1000 compares one search answering 1,000 Observations for
// a clinician and for a research client (de-identified): the ratio of the
// two is the cost of research access on the read path.
func BenchmarkSearch1000(b *testing.B) {
	e := start(b)
	if st, body := e.do("clinician", "PUT", "/Patient/p1", patient); st >= 300 {
		b.Fatalf("seed: %d %v", st, body)
	}
	var entries []string
	for i := range 1000 {
		entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Observation","id":"o%d","status":"final",
 "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
 "code":{"coding":[{"system":"http://loinc.org","code":"72514-3","display":"Pain severity"}],"text":"Pain"},
 "subject":{"reference":"Patient/p1","display":"Ana"},"effectiveDateTime":"2024-03-%02dT08:%02d:00Z",
 "valueQuantity":{"value":%d,"unit":"{score}","system":"http://unitsofmeasure.org","code":"{score}"},"note":[{"text":"free text"}]},
 "request":{"method":"PUT","url":"Observation/o%d"}}`, i, 1+i%28, i%60, i%11, i))
	}
	if st, body := e.do("clinician", "POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[`+strings.Join(entries, ",")+`]}`); st != 200 {
		b.Fatalf("seed transaction: %d %v", st, body)
	}
	search := func(b *testing.B, who string) {
		st, body := e.do(who, "GET", "/Observation?code=http://loinc.org|72514-3&_count=1000", "")
		if st != 200 || len(body["entry"].([]any)) != 1000 {
			b.Fatalf("%s: %d", who, st)
		}
	}
	b.Run("clinician", func(b *testing.B) {
		for b.Loop() {
			search(b, "clinician")
		}
	})
	// A project that has seen these resources before (pseudonyms recorded).
	b.Run("research", func(b *testing.B) {
		search(b, "research:alpha")
		for b.Loop() {
			search(b, "research:alpha")
		}
	})
	// A new project each time: its 1,001 pseudonyms are recorded first.
	b.Run("research-new-project", func(b *testing.B) {
		n := 0
		for b.Loop() {
			n++
			search(b, fmt.Sprintf("research:new%d", n))
		}
	})
}
