package rpm

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// BenchmarkObservationWrite is the cost of one SpO2 reading POSTed over
// HTTP to SQLite, without the observer (plain) and with it (rpm), for a
// patient with 300 earlier readings and an active CarePlan with a Goal.
// The values cycle through breaches and recoveries, so the Flag and
// DetectedIssue are rewritten on part of the writes, as in real use.
// Compare ns/op of the two: the ratio is the observer's extra cost.
func BenchmarkObservationWrite(b *testing.B) {
	th := defaults(b)
	for _, withRPM := range []bool{false, true} {
		name := "plain"
		if withRPM {
			name = "rpm"
		}
		b.Run(name, func(b *testing.B) {
			be, err := sqlite.Open(context.Background(), b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { be.Close() })
			var c *client
			if withRPM {
				c = startServer(b, be, NewObserver(th, nil))
			} else {
				c = startServer(b, be, nil)
			}
			c.do("PUT", "/Goal/g", `{"resourceType":"Goal","id":"g","lifecycleStatus":"active","description":{"text":"SpO2"},
				"subject":{"reference":"Patient/p-bench"},
				"target":[{"measure":{"coding":[{"system":"http://loinc.org","code":"2708-6"}]},"detailRange":{"low":{"value":93,"system":"http://unitsofmeasure.org","code":"%"}}}]}`, 201)
			c.do("PUT", "/CarePlan/cp", `{"resourceType":"CarePlan","id":"cp","status":"active","intent":"plan",
				"subject":{"reference":"Patient/p-bench"},"goal":[{"reference":"Goal/g"}]}`, 201)
			values := []float64{96, 97, 92, 91, 98, 99, 97, 89, 88, 96}
			for i := range 300 {
				c.do("POST", "/Observation", obsJSON("", "p-bench", "2708-6", float64(i), values[i%len(values)], "%"), 201)
			}
			bodies := make([]string, 64)
			for i := range bodies {
				bodies[i] = obsJSON("", "p-bench", "2708-6", float64(300+i), values[i%len(values)], "%")
			}
			hc := &http.Client{}
			for i := 0; b.Loop(); i++ {
				res, err := hc.Post(c.base+"/Observation", "application/fhir+json", strings.NewReader(bodies[i%len(bodies)]))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 201 {
					b.Fatal(fmt.Sprint("status ", res.StatusCode))
				}
			}
		})
	}
}
