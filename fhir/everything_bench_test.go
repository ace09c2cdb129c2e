package fhir

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

// BenchmarkEverythingHeavy: the first page of 1,000 of Patient $everything
// for one patient with a long history (4,000 Observations over 600
// Encounters seen by 25 Practitioners at 5 Organizations), the shape of the
// heaviest Synthea patients, on SQLite through the full HTTP stack (auth
// off). Each page assembles the whole set (see everything.go).
//
//	go test ./fhir -run '^$' -bench BenchmarkEverythingHeavy -benchtime 20x
func BenchmarkEverythingHeavy(b *testing.B) {
	s, ts, be := benchServer(b, b.TempDir())
	ctx := context.Background()
	var writes []storage.Write
	put := func(typ, id string, res map[string]any) {
		w, err := s.prepare(typ, id, res, 0, now(), http.MethodPut)
		if err != nil {
			b.Fatal(err)
		}
		writes = append(writes, w)
		if len(writes) == 500 {
			if _, err := be.Commit(ctx, writes...); err != nil {
				b.Fatal(err)
			}
			writes = writes[:0]
		}
	}
	decode := func(s string) map[string]any {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			b.Fatal(err)
		}
		return m
	}
	for i := range 5 {
		put("Organization", fmt.Sprintf("org%d", i), decode(`{"resourceType":"Organization","name":"Clinic"}`))
	}
	for i := range 25 {
		put("Practitioner", fmt.Sprintf("pr%d", i), decode(`{"resourceType":"Practitioner","name":[{"family":"Doe"}]}`))
	}
	put("Patient", "heavy", decode(`{"resourceType":"Patient","name":[{"family":"Heavy"}],"gender":"female","birthDate":"1950-01-01"}`))
	for i := range 600 {
		put("Encounter", fmt.Sprintf("enc%d", i), decode(fmt.Sprintf(`{"resourceType":"Encounter","status":"finished",
"class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"subject":{"reference":"Patient/heavy"},
"participant":[{"individual":{"reference":"Practitioner/pr%d"}}],"serviceProvider":{"reference":"Organization/org%d"},
"period":{"start":"2020-01-01T10:00:00Z","end":"2020-01-01T11:00:00Z"}}`, i%25, i%5)))
	}
	for i := range 4000 {
		obs := decode(benchObservation)
		obs["subject"] = map[string]any{"reference": "Patient/heavy"}
		obs["encounter"] = map[string]any{"reference": fmt.Sprintf("Encounter/enc%d", i%600)}
		obs["performer"] = []any{map[string]any{"reference": fmt.Sprintf("Practitioner/pr%d", i%25)}}
		put("Observation", fmt.Sprintf("obs%d", i), obs)
	}
	if _, err := be.Commit(ctx, writes...); err != nil {
		b.Fatal(err)
	}
	url := ts.URL + "/fhir/Patient/heavy/$everything?_count=1000"
	res, err := ts.Client().Get(url)
	if err != nil {
		b.Fatal(err)
	}
	var bundle struct {
		Total int `json:"total"`
	}
	if err := json.NewDecoder(res.Body).Decode(&bundle); err != nil {
		b.Fatal(err)
	}
	res.Body.Close()
	if want := 1 + 600 + 4000 + 25 + 5; bundle.Total != want {
		b.Fatalf("$everything total = %d, want %d", bundle.Total, want)
	}
	b.ResetTimer()
	for b.Loop() {
		getOK(b, ts.Client(), url)
	}
}
