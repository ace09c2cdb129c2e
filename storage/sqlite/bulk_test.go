package sqlite

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// bulkWrites is a Commit's worth of varied writes: plain creates with
// entries of every kind (a composite among them), an update and a claim
// in the middle, so that the Commit has bulk runs and one-by-one writes.
func bulkWrites(n int) []storage.Write {
	at := time.UnixMilli(1.7e12)
	var ws []storage.Write
	for i := range n {
		w := storage.Write{Record: storage.Record{Type: "Observation", ID: fmt.Sprintf("o%03d", i), VersionID: 1, LastUpdated: at.Add(time.Duration(i) * time.Second),
			Method: "POST", JSON: fmt.Appendf(nil, `{"resourceType":"Observation","id":"o%03d"}`, i)},
			Index: []storage.Entry{
				{Param: "code", Kind: storage.KindToken, System: "http://loinc.org", Code: fmt.Sprintf("c%d", i%7), Text: "t"},
				{Param: "subject", Kind: storage.KindReference, RefType: "Patient", RefID: fmt.Sprintf("p%d", i%3)},
				{Param: "focus", Kind: storage.KindReference, RefURL: "http://elsewhere/x"},
				{Param: "date", Kind: storage.KindDate, Low: int64(i) * 1000, High: int64(i)*1000 + 999},
				{Param: "value-quantity", Kind: storage.KindQuantity, Num: float64(i), NumLow: float64(i) - .5, NumHigh: float64(i) + .5, System: "u", Code: "cm"},
				{Param: "n", Kind: storage.KindNumber, Num: 2, NumLow: 1.5, NumHigh: 2.5},
				{Param: "name", Kind: storage.KindString, Text: "ann", Exact: "Ann"},
				{Param: "url", Kind: storage.KindURI, Exact: "http://x"},
			}}
		if i%5 == 0 {
			w.Index = append(w.Index, storage.Entry{Param: "code-value", Kind: storage.KindComposite, Parts: []storage.Entry{
				{Kind: storage.KindToken, System: "http://loinc.org", Code: "c"}, {Kind: storage.KindQuantity, Num: float64(i)}}})
		}
		switch i {
		case 9:
			w.Claim = "claim-9"
		case 13:
			w.Events = []storage.Event{{Stream: "s", ID: "e13", Data: []byte("x")}}
		}
		ws = append(ws, w)
	}
	return ws
}

// dump is every row of the tables a Commit writes, in a fixed order.
func dump(t *testing.T, b *Backend) string {
	t.Helper()
	var out strings.Builder
	for _, q := range []string{
		"SELECT seq, type, id, version, last_updated, deleted, method, json, entries FROM versions ORDER BY seq",
		"SELECT param, ref_id, ref_type, seq FROM version_refs ORDER BY 1, 2, 3, 4",
		"SELECT pk, type, id, version, seq, deleted FROM resources ORDER BY pk",
		"SELECT claim, res_pk FROM claims ORDER BY 1",
		"SELECT res_pk, param, text, exact FROM idx_string ORDER BY 1, 2, 3, 4",
		"SELECT res_pk, param, system, code, text FROM idx_token ORDER BY 1, 2, 3, 4, 5",
		"SELECT res_pk, param, ref_type, ref_id, ref_url, system, code FROM idx_reference ORDER BY 1, 2, 3, 4, 5",
		"SELECT res_pk, param, low, high FROM idx_date ORDER BY 1, 2, 3, 4",
		"SELECT res_pk, param, num_low, num_high, num FROM idx_number ORDER BY 1, 2, 3",
		"SELECT res_pk, param, num_low, num_high, num, system, code FROM idx_quantity ORDER BY 1, 2, 3",
		"SELECT res_pk, param, exact FROM idx_uri ORDER BY 1, 2, 3",
		"SELECT cid, res_pk, param FROM idx_composite ORDER BY 1",
		"SELECT cid, part, res_pk, param, code, num FROM idx_composite_part ORDER BY 1, 2",
		"SELECT stream, id, seq, data FROM outbox ORDER BY n",
		"SELECT param, ref_id, dparam, high, low, res_pk FROM idx_ref_date ORDER BY 1, 2, 3, 4, 5, 6",
	} {
		rows, err := b.r.QueryContext(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		fmt.Fprintf(&out, "%s\n", q)
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for i, v := range vals {
				if bs, ok := v.([]byte); ok {
					vals[i] = string(bs)
				}
			}
			fmt.Fprintln(&out, vals...)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out.String()
}

// TestBulkCreateSameRows: one Commit of many creates (written in bulk
// runs) leaves exactly the rows that one Commit per write (each written
// one by one) leaves, seqs and pks included, and returns the same records.
func TestBulkCreateSameRows(t *testing.T) {
	ws := bulkWrites(40)
	bulk := openT(t, t.TempDir())
	defer bulk.Close()
	got, err := bulk.Commit(t.Context(), ws...)
	if err != nil {
		t.Fatal(err)
	}
	one := openT(t, t.TempDir())
	defer one.Close()
	var want []storage.Record
	for _, w := range bulkWrites(40) {
		recs, err := one.Commit(t.Context(), w)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, recs...)
	}
	for i := range want {
		if got[i].Seq != want[i].Seq || got[i].ID != want[i].ID || string(got[i].JSON) != string(want[i].JSON) {
			t.Errorf("record %d: bulk %+v, one by one %+v", i, got[i], want[i])
		}
	}
	if g, w := dump(t, bulk), dump(t, one); g != w {
		t.Errorf("bulk rows differ from one-by-one rows:\nbulk:\n%s\none by one:\n%s", g, w)
	}
	// Searches see the bulk-written entries.
	page, err := bulk.Search(t.Context(), storage.Query{Types: []string{"Observation"}, Count: 100,
		Filter: storage.And{Exprs: []storage.Expr{skewRef("subject", "p1"), storage.Match{Param: "code", Kind: storage.KindToken,
			Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "c3"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range page.Records {
		ids = append(ids, r.ID)
	}
	// i%3 == 1 and i%7 == 3: 10, 31.
	if strings.Join(ids, ",") != "o010,o031" {
		t.Errorf("search found %v, want o010,o031", ids)
	}
}

// TestBulkCreateConflict: a run with a resource that exists, or the same
// id twice, fails as a whole with the version conflict of that write, and
// leaves nothing behind.
func TestBulkCreateConflict(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(ws []storage.Write)
		pre  bool // o007 exists before the Commit
	}{
		{"existing resource", func([]storage.Write) {}, true},
		{"same id twice", func(ws []storage.Write) { ws[20].ID = "o007" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := openT(t, t.TempDir())
			defer b.Close()
			if tc.pre {
				put(t, b, "Observation", "o007", 0)
			}
			before := dump(t, b)
			ws := bulkWrites(30)
			tc.edit(ws)
			_, err := b.Commit(t.Context(), ws...)
			if !errors.Is(err, storage.ErrVersionConflict) || !strings.Contains(err.Error(), "Observation/o007") {
				t.Fatalf("err %v, want a version conflict on Observation/o007", err)
			}
			if after := dump(t, b); after != before {
				t.Errorf("a failed Commit left rows:\n%s", after)
			}
		})
	}
}
