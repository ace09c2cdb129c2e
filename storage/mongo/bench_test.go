package mongo

import (
	"fmt"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// benchN is the number of stored Observations: small, because on FerretDB
// every find scans the whole collection.
const benchN = 300

func seedObservations(b *testing.B, be *Backend) {
	b.Helper()
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range benchN {
		at := base.Add(time.Duration(i) * time.Hour).UnixMilli()
		w := storage.Write{
			Record: storage.Record{Type: "Observation", ID: fmt.Sprintf("o%04d", i), VersionID: 1, LastUpdated: time.Now(), Method: "POST",
				JSON: fmt.Appendf(nil, `{"resourceType":"Observation","id":"o%04d"}`, i)},
			Index: []storage.Entry{
				{Param: "subject", Kind: storage.KindReference, RefType: "Patient", RefID: fmt.Sprintf("p%d", i%10)},
				{Param: "code", Kind: storage.KindToken, System: "http://loinc.org", Code: fmt.Sprintf("code-%d", i%7)},
				{Param: "date", Kind: storage.KindDate, Low: at, High: at + 999},
				{Param: "value-quantity", Kind: storage.KindQuantity, Num: float64(i % 200), NumLow: float64(i%200) - 0.5, NumHigh: float64(i%200) + 0.5, System: "http://unitsofmeasure.org", Code: "mm[Hg]"},
			},
		}
		if _, err := be.Commit(b.Context(), w); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBackend(b *testing.B) {
	be := fresh(b)
	seedObservations(b, be)
	ctx := b.Context()
	patientCode := storage.And{Exprs: []storage.Expr{
		storage.Match{Param: "subject", Kind: storage.KindReference, Cond: storage.And{Exprs: []storage.Expr{
			storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: "Patient"},
			storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: "p3"},
		}}},
		storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "code-2"}},
	}}
	b.Run("Commit", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			w := storage.Write{Record: storage.Record{Type: "Patient", ID: fmt.Sprintf("b%d", i), VersionID: 1, LastUpdated: time.Now(), Method: "POST", JSON: []byte(`{}`)}}
			if _, err := be.Commit(ctx, w); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Commit3Writes", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			ws := make([]storage.Write, 3)
			for j := range ws {
				ws[j] = storage.Write{Record: storage.Record{Type: "Patient", ID: fmt.Sprintf("m%d-%d", i, j), VersionID: 1, LastUpdated: time.Now(), Method: "POST", JSON: []byte(`{}`)}}
			}
			if _, err := be.Commit(ctx, ws...); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Read", func(b *testing.B) {
		for b.Loop() {
			if _, err := be.Read(ctx, "Observation", "o0150"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("SearchOneToken", func(b *testing.B) {
		q := storage.Query{Types: []string{"Observation"}, Filter: storage.Match{Param: "code", Kind: storage.KindToken,
			Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "code-2"}}, Count: 20, Total: true}
		for b.Loop() {
			if _, err := be.Search(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("SearchPatientCodeSortedByDate", func(b *testing.B) {
		q := storage.Query{Types: []string{"Observation"}, Filter: patientCode, Count: 20,
			Sort: []storage.Sort{{Param: "date", Kind: storage.KindDate, Desc: true}}}
		for b.Loop() {
			if _, err := be.Search(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("SearchQuantityRange", func(b *testing.B) {
		q := storage.Query{Types: []string{"Observation"}, Filter: storage.Match{Param: "value-quantity", Kind: storage.KindQuantity,
			Cond: storage.And{Exprs: []storage.Expr{
				storage.Cmp{Field: storage.FieldNumHigh, Op: storage.OpGe, Value: 100.0},
				storage.Cmp{Field: storage.FieldNumLow, Op: storage.OpLe, Value: 140.0},
			}}}, Count: 20, Total: true}
		for b.Loop() {
			if _, err := be.Search(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
	})
}
