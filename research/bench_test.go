package research_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time (user and system) the process has used: the
// server runs in it, so its growth over a loop is the loop's CPU on every
// core, which the shared machine's load does not inflate as it does wall time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loop runs fn b.N times and reports the process CPU per run (cpu-ms/op).
func loop(b *testing.B, fn func()) {
	start := cpuTime(b)
	for b.Loop() {
		fn()
	}
	b.ReportMetric(float64(cpuTime(b)-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

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
		loop(b, func() { search(b, "clinician") })
	})
	// A project that has seen these resources before (pseudonyms recorded).
	b.Run("research", func(b *testing.B) {
		search(b, "research:alpha")
		loop(b, func() { search(b, "research:alpha") })
	})
	// A new project each time: its 1,001 pseudonyms are recorded first.
	b.Run("research-new-project", func(b *testing.B) {
		n := 0
		loop(b, func() {
			n++
			search(b, fmt.Sprintf("research:new%d", n))
		})
	})
}
