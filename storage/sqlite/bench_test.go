package sqlite

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// observation builds a typical vital-sign Observation: about 1.5 KB of JSON
// and 15 index entries, as the resources package would extract them.
func observation(i, patient int) storage.Write {
	id := fmt.Sprintf("obs-%07d", i)
	pat := fmt.Sprintf("pat-%05d", patient)
	when := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute)
	sys, dia := 110+i%40, 70+i%20
	body := fmt.Sprintf(`{"resourceType":"Observation","id":%q,"meta":{"versionId":"1","lastUpdated":%q,"profile":["http://hl7.org/fhir/StructureDefinition/vitalsigns","http://hl7.org/fhir/StructureDefinition/bp"]},`+
		`"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs","display":"Vital Signs"}],"text":"Vital Signs"}],`+
		`"code":{"coding":[{"system":"http://loinc.org","code":"85354-9","display":"Blood pressure panel with all children optional"}],"text":"Blood pressure systolic and diastolic"},`+
		`"subject":{"reference":"Patient/%s","display":"Patient %d"},"encounter":{"reference":"Encounter/enc-%d"},"effectiveDateTime":%q,"issued":%q,`+
		`"performer":[{"reference":"Practitioner/prac-%d"}],"interpretation":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation","code":"N","display":"normal"}],"text":"Normal"}],`+
		`"bodySite":{"coding":[{"system":"http://snomed.info/sct","code":"368209003","display":"Right arm"}]},`+
		`"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6","display":"Systolic blood pressure"}],"text":"Systolic blood pressure"},`+
		`"valueQuantity":{"value":%d,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"},"interpretation":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation","code":"N"}]}]},`+
		`{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4","display":"Diastolic blood pressure"}],"text":"Diastolic blood pressure"},`+
		`"valueQuantity":{"value":%d,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"},"interpretation":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation","code":"N"}]}]}]}`,
		id, when.Format(time.RFC3339), pat, patient, i/3, when.Format(time.RFC3339), when.Format(time.RFC3339), patient%50, sys, dia)
	ms := when.UnixMilli()
	tok := func(p, s, c, t string) storage.Entry {
		return storage.Entry{Param: p, Kind: storage.KindToken, System: s, Code: c, Text: t}
	}
	q := func(v float64) storage.Entry {
		return storage.Entry{Kind: storage.KindQuantity, Num: v, NumLow: v - 0.5, NumHigh: v + 0.5, System: "http://unitsofmeasure.org", Code: "mm[Hg]"}
	}
	loinc := "http://loinc.org"
	return storage.Write{
		Record: storage.Record{Type: "Observation", ID: id, VersionID: 1, LastUpdated: when, Method: "POST", JSON: []byte(body)},
		Index: []storage.Entry{
			{Param: "subject", Kind: storage.KindReference, RefType: "Patient", RefID: pat},
			{Param: "patient", Kind: storage.KindReference, RefType: "Patient", RefID: pat},
			{Param: "encounter", Kind: storage.KindReference, RefType: "Encounter", RefID: fmt.Sprintf("enc-%d", i/3)},
			{Param: "performer", Kind: storage.KindReference, RefType: "Practitioner", RefID: fmt.Sprintf("prac-%d", patient%50)},
			tok("status", "http://hl7.org/fhir/observation-status", "final", ""),
			tok("category", "http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs", "vital signs"),
			tok("code", loinc, "85354-9", "blood pressure systolic and diastolic"),
			tok("combo-code", loinc, "85354-9", "blood pressure systolic and diastolic"),
			tok("combo-code", loinc, "8480-6", "systolic blood pressure"),
			tok("combo-code", loinc, "8462-4", "diastolic blood pressure"),
			tok("component-code", loinc, "8480-6", "systolic blood pressure"),
			tok("component-code", loinc, "8462-4", "diastolic blood pressure"),
			{Param: "date", Kind: storage.KindDate, Low: ms, High: ms},
			{Param: "component-code-value-quantity", Kind: storage.KindComposite, Parts: []storage.Entry{tok("", loinc, "8480-6", ""), q(float64(sys))}},
			{Param: "component-code-value-quantity", Kind: storage.KindComposite, Parts: []storage.Entry{tok("", loinc, "8462-4", ""), q(float64(dia))}},
		},
	}
}

func BenchmarkCommit(b *testing.B) {
	be, err := Open(b.Context(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	i := 0
	for b.Loop() {
		if _, err := be.Commit(b.Context(), observation(i, i%1000)); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(len(observation(0, 0).JSON)), "json-bytes")
}

// BenchmarkCommitConcurrent measures durable Commit throughput with 1, 4
// and 16 concurrent writers, each Commit its own transaction ("alone") or
// grouped with the Commits waiting at the same time ("group").
func BenchmarkCommitConcurrent(b *testing.B) {
	for _, mode := range []struct {
		name  string
		group int
	}{{"alone", 1}, {"group", 64}} {
		for _, writers := range []int{1, 4, 16} {
			b.Run(fmt.Sprintf("%s/writers-%d", mode.name, writers), func(b *testing.B) {
				be, err := Open(b.Context(), b.TempDir(), WithGroupCommit(mode.group))
				if err != nil {
					b.Fatal(err)
				}
				defer be.Close()
				var next atomic.Int64
				var wg sync.WaitGroup
				errs := make(chan error, writers)
				b.ResetTimer()
				for range writers {
					wg.Go(func() {
						for {
							i := int(next.Add(1)) - 1
							if i >= b.N {
								return
							}
							if _, err := be.Commit(b.Context(), observation(i, i%1000)); err != nil {
								errs <- err
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
				b.ReportMetric(float64(b.N)/float64(be.groups.Load()), "commits/tx")
			})
		}
	}
}

// BenchmarkAt100k loads 100,000 Observations of 1,000 patients once (1,000
// writes per Commit), then measures Read and a one-patient search.
func BenchmarkAt100k(b *testing.B) {
	const total, patients, batch = 100_000, 1_000, 1_000
	be, err := Open(b.Context(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	start := time.Now()
	ws := make([]storage.Write, 0, batch)
	for i := range total {
		ws = append(ws, observation(i, i%patients))
		if len(ws) == batch {
			if _, err := be.Commit(b.Context(), ws...); err != nil {
				b.Fatal(err)
			}
			ws = ws[:0]
		}
	}
	b.Logf("loaded %d Observations in %v", total, time.Since(start))

	b.Run("Read", func(b *testing.B) {
		i := 0
		for b.Loop() {
			id := fmt.Sprintf("obs-%07d", (i*7919)%total)
			if _, err := be.Read(b.Context(), "Observation", id); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	patientQuery := func(p int, sort []storage.Sort) storage.Query {
		return storage.Query{
			Types: []string{"Observation"},
			Filter: storage.Match{Param: "subject", Kind: storage.KindReference, Cond: storage.And{Exprs: []storage.Expr{
				storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: "Patient"},
				storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: fmt.Sprintf("pat-%05d", p)},
			}}},
			Sort:  sort,
			Count: 100,
		}
	}
	for _, c := range []struct {
		name string
		sort []storage.Sort
	}{
		{"SearchPatient", nil},
		{"SearchPatientSortedByDate", []storage.Sort{{Param: "date", Kind: storage.KindDate, Desc: true}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				p, err := be.Search(b.Context(), patientQuery((i*31)%patients, c.sort))
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Records) != total/patients {
					b.Fatalf("%d records, want %d", len(p.Records), total/patients)
				}
				i++
			}
		})
	}
	// Systolic (8480-6) at or above a value: 5,000 matches for 148, 22,500
	// for 141 ("gt140"). Each search counts the total and reads one page.
	for _, c := range []struct {
		name string
		min  float64
		want int64
	}{
		{"SearchComposite", 148, 5_000},
		{"SearchCompositeGt140", 141, 22_500},
	} {
		b.Run(c.name, func(b *testing.B) {
			q := storage.Query{Types: []string{"Observation"}, Count: 50, Total: true, Filter: storage.Match{
				Param: "component-code-value-quantity", Kind: storage.KindComposite, Cond: storage.And{Exprs: []storage.Expr{
					storage.Part{Index: 0, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "8480-6"}},
					storage.Part{Index: 1, Cond: storage.Cmp{Field: storage.FieldNum, Op: storage.OpGe, Value: c.min}},
				}}}}
			for b.Loop() {
				p, err := be.Search(b.Context(), q)
				if err != nil {
					b.Fatal(err)
				}
				if p.Total != c.want || len(p.Records) != 50 {
					b.Fatalf("Total %d, %d records; want %d, 50", p.Total, len(p.Records), c.want)
				}
			}
		})
	}
}

// BenchmarkFilteredHistory measures one history page (Count 50) of the
// Observation type over 20,000 versions of 1,000 patients (20 each):
// unfiltered, filtered to one patient's compartment (driven by
// version_refs), and filtered by a query-only condition, which reads the
// versions until the page is full: at once when most match ("common"),
// all 20,000 when none does ("rare", the worst case).
func BenchmarkFilteredHistory(b *testing.B) {
	be, err := Open(b.Context(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	const n, batch = 20000, 500
	for i := 0; i < n; i += batch {
		ws := make([]storage.Write, 0, batch)
		for j := i; j < i+batch; j++ {
			ws = append(ws, observation(j, j%1000))
		}
		if _, err := be.Commit(b.Context(), ws...); err != nil {
			b.Fatal(err)
		}
	}
	ref := func(param string) storage.Expr {
		return storage.Match{Param: param, Kind: storage.KindReference, Cond: storage.And{Exprs: []storage.Expr{
			storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: "Patient"},
			storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: "pat-00042"}}}}
	}
	code := func(c string) storage.Expr {
		return storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: c}}
	}
	// System history for a patient: one compartment filter per type, as
	// the FHIR layer passes for a patient/*.rs token (about 60 types).
	perType := map[string]storage.Expr{"Observation": storage.Or{Exprs: []storage.Expr{ref("subject"), ref("patient"), ref("performer")}}}
	for i := range 60 {
		perType[fmt.Sprintf("Type%02d", i)] = storage.Or{Exprs: []storage.Expr{ref("subject"), ref("patient")}}
	}
	b.Run("system-compartment", func(b *testing.B) {
		for b.Loop() {
			p, err := be.History(b.Context(), storage.HistoryRequest{Count: 50, TypeFilters: perType})
			if err != nil {
				b.Fatal(err)
			}
			if len(p.Records) != 20 {
				b.Fatalf("%d records, want 20", len(p.Records))
			}
		}
	})
	for _, c := range []struct {
		name   string
		filter storage.Expr
		want   int
	}{
		{"unfiltered", nil, 50},
		{"compartment", storage.Or{Exprs: []storage.Expr{ref("subject"), ref("patient"), ref("performer")}}, 20},
		{"query-common", code("85354-9"), 50},
		{"query-rare", code("no-such-code"), 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				p, err := be.History(b.Context(), storage.HistoryRequest{Type: "Observation", Count: 50, Filter: c.filter})
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Records) != c.want {
					b.Fatalf("%d records, want %d", len(p.Records), c.want)
				}
			}
		})
	}
}
