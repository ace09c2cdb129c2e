package sqlite

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

type refObs struct {
	id         string
	patient    string
	code       string
	low, high  int64
	dated      bool
	subjectToo bool // a second reference entry to the same patient
}

func (o refObs) write(version int64) storage.Write {
	es := []storage.Entry{
		{Param: "patient", Kind: storage.KindReference, RefType: "Patient", RefID: o.patient},
		{Param: "code", Kind: storage.KindToken, System: "http://loinc.org", Code: o.code},
		{Param: "_lastUpdated", Kind: storage.KindDate, Low: 1, High: 1},
	}
	if o.subjectToo {
		es = append(es, storage.Entry{Param: "patient", Kind: storage.KindReference, RefType: "Patient", RefID: o.patient})
	}
	if o.dated {
		es = append(es, storage.Entry{Param: "date", Kind: storage.KindDate, Low: o.low, High: o.high})
	}
	return storage.Write{Record: storage.Record{Type: "Observation", ID: o.id, VersionID: version, LastUpdated: time.UnixMilli(1.7e12), Method: "PUT",
		JSON: fmt.Appendf(nil, `{"resourceType":"Observation","id":%q}`, o.id)}, ExpectVersion: version - 1, Index: es}
}

// TestRefWalkPages: one patient's Observations of a code by date, read
// page by page through the reference walk, are exactly the list computed
// here from the data (MAX(high) descending or MIN(low) ascending, ties by
// id, undated last), after updates that move dates, a delete and a code
// change, with duplicate reference entries, and again after a migration
// from schema 3 fills idx_ref_date from the index tables.
func TestRefWalkPages(t *testing.T) {
	log := &planLog{}
	dir := t.TempDir()
	b, err := Open(t.Context(), dir, WithLogger(slog.New(log)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { b.Close() }()
	obs := map[string]refObs{}
	var ws []storage.Write
	for i := range 150 {
		o := refObs{id: fmt.Sprintf("o%03d", i), patient: "heavy", code: []string{"pain", "pain", "bp"}[i%3],
			low: int64(i*37%50) * 1000, dated: i%17 != 0, subjectToo: i%5 == 0}
		o.high = o.low + 999
		if i%40 == 0 {
			o.patient = "other"
		}
		obs[o.id] = o
		ws = append(ws, o.write(1))
	}
	// The code is common elsewhere, so that the patient drives.
	for i := range 400 {
		ws = append(ws, refObs{id: fmt.Sprintf("x%03d", i), patient: fmt.Sprintf("p%02d", i%30), code: "pain", low: 5, high: 6, dated: true}.write(1))
	}
	if _, err := b.Commit(t.Context(), ws...); err != nil {
		t.Fatal(err)
	}
	// Updates move dates and codes; a delete removes one.
	for _, id := range []string{"o003", "o009", "o021"} {
		o := obs[id]
		o.low, o.high = 90000, 90999
		if id == "o021" {
			o.code = "bp"
		}
		obs[id] = o
		if _, err := b.Commit(t.Context(), o.write(2)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Commit(t.Context(), storage.Write{Record: storage.Record{Type: "Observation", ID: "o006", VersionID: 2, LastUpdated: time.UnixMilli(1.7e12), Method: "DELETE", Deleted: true}, ExpectVersion: 1}); err != nil {
		t.Fatal(err)
	}
	delete(obs, "o006")

	want := func(desc bool) []string {
		var hits []refObs
		for _, o := range obs {
			if o.patient == "heavy" && o.code == "pain" {
				hits = append(hits, o)
			}
		}
		slices.SortFunc(hits, func(a, c refObs) int {
			if a.dated != c.dated {
				if a.dated {
					return -1
				}
				return 1
			}
			ka, kc := a.low, c.low
			if desc {
				ka, kc = -a.high, -c.high
			}
			if a.dated && ka != kc {
				return cmpInt(ka, kc)
			}
			return strings.Compare(a.id, c.id)
		})
		var ids []string
		for _, o := range hits {
			ids = append(ids, o.id)
		}
		return ids
	}
	check := func(when string) {
		for _, desc := range []bool{true, false} {
			q := storage.Query{Types: []string{"Observation"}, Count: 7, Sort: []storage.Sort{{Param: "date", Kind: storage.KindDate, Desc: desc}},
				Filter: storage.And{Exprs: []storage.Expr{skewRef("patient", "heavy"), storage.Match{Param: "code", Kind: storage.KindToken,
					Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "pain"}}}}}
			var got, plans []string
			for range 100 {
				p, err := b.Search(t.Context(), q)
				if err != nil {
					t.Fatal(err)
				}
				plans = append(plans, log.last())
				for _, r := range p.Records {
					got = append(got, r.ID)
				}
				if p.Next == "" {
					break
				}
				q.Cursor = p.Next
			}
			if w := want(desc); !slices.Equal(got, w) {
				t.Errorf("%s, desc %v: pages give\n%v\nwant\n%v", when, desc, got, w)
			}
			if plans[0] != "ref walk" {
				t.Errorf("%s, desc %v: first page ran %q, want the ref walk", when, desc, plans[0])
			}
		}
	}
	check("written")

	// Schema 3 had no idx_ref_date: Open fills it from the index tables.
	for _, s := range []string{`DROP TABLE idx_ref_date`, `UPDATE schema_version SET version = 3`} {
		if _, err := b.w.ExecContext(t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
	b.Close()
	if b, err = Open(t.Context(), dir, WithLogger(slog.New(log))); err != nil {
		t.Fatal(err)
	}
	check("migrated from schema 3")
}
