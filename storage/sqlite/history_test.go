package sqlite

import (
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

func del(t *testing.T, b *Backend, typ, id string, expect int64) storage.Record {
	t.Helper()
	recs, err := b.Commit(t.Context(), storage.Write{
		Record:        storage.Record{Type: typ, ID: id, VersionID: expect + 1, LastUpdated: time.Now(), Method: "DELETE", Deleted: true},
		ExpectVersion: expect,
	})
	if err != nil {
		t.Fatalf("delete %s/%s: %v", typ, id, err)
	}
	return recs[0]
}

func rawEntries(t *testing.T, b *Backend, seq int64) []byte {
	t.Helper()
	var stored []byte
	if err := b.r.QueryRowContext(t.Context(), `SELECT entries FROM versions WHERE seq = ?`, seq).Scan(&stored); err != nil {
		t.Fatalf("entries of seq %d: %v", seq, err)
	}
	if len(stored) > 0 && stored[0] != tagEntries1 && string(stored) != "[]" {
		t.Fatalf("entries of seq %d stored with tag %#x, want %#x", seq, stored[0], tagEntries1)
	}
	raw, err := b.cd.decode(stored)
	if err != nil {
		t.Fatalf("entries of seq %d: %v", seq, err)
	}
	return raw
}

// TestEntriesEncodingPinned holds the on-disk form of versions.entries
// (inside the codec of codec.go, held by TestCodecPinned): changing it
// would make stored versions unreadable to a filtered history.
func TestEntriesEncodingPinned(t *testing.T) {
	b := openT(t, t.TempDir())
	defer b.Close()
	v1 := put(t, b, "Observation", "o", 0,
		storage.Entry{Param: "subject", Kind: storage.KindReference, RefType: "Patient", RefID: "p1"},
		storage.Entry{Param: "code", Kind: storage.KindToken, System: "http://loinc.org", Code: "72514-3", Text: "pain"},
		storage.Entry{Param: "date", Kind: storage.KindDate, Low: 1709280000000, High: 1709280000999},
		storage.Entry{Param: "value-quantity", Kind: storage.KindQuantity, Num: 7, NumLow: 6.5, NumHigh: 7.5, System: "http://unitsofmeasure.org", Code: "{score}"},
		storage.Entry{Param: "combo", Kind: storage.KindComposite, Parts: []storage.Entry{{Kind: storage.KindToken, Code: "x"}, {Kind: storage.KindNumber, Num: 1}}},
	)
	const want = `[{"p":"subject","k":3,"rt":"Patient","ri":"p1"},` +
		`{"p":"code","k":2,"t":"pain","s":"http://loinc.org","c":"72514-3"},` +
		`{"p":"date","k":4,"lo":1709280000000,"hi":1709280000999},` +
		`{"p":"value-quantity","k":6,"s":"http://unitsofmeasure.org","c":"{score}","nl":6.5,"nh":7.5,"n":7},` +
		`{"p":"combo","k":8,"parts":[{"p":"","k":2,"c":"x"},{"p":"","k":5,"n":1}]}]`
	if got := string(rawEntries(t, b, v1.Seq)); got != want {
		t.Fatalf("stored entries:\n got  %s\n want %s", got, want)
	}
	// A version without entries is [] (known to have none), not NULL.
	v2 := put(t, b, "Observation", "o", 1)
	if got := rawEntries(t, b, v2.Seq); string(got) != "[]" {
		t.Fatalf("entries of a version without any = %q, want []", got)
	}
	put(t, b, "Observation", "o", 2, storage.Entry{Param: "subject", Kind: storage.KindReference, RefType: "Patient", RefID: "p2"})
	d := del(t, b, "Observation", "o", 3)
	if got := string(rawEntries(t, b, d.Seq)); got != `[{"p":"subject","k":3,"rt":"Patient","ri":"p2"}]` {
		t.Fatalf("a delete keeps the deleted version's entries; got %s", got)
	}
	var refs []string
	rows, err := b.r.QueryContext(t.Context(), `SELECT param || ' ' || ref_type || '/' || ref_id || ' ' || (seq - ?) FROM version_refs ORDER BY seq, param`, v1.Seq)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, s)
	}
	if got, want := strings.Join(refs, "; "), "subject Patient/p1 0; subject Patient/p2 2; subject Patient/p2 3"; got != want {
		t.Fatalf("version_refs: got %q, want %q", got, want)
	}
}

// TestMigrateFromVersion2 rewrites a database into the version 2 layout
// (no versions.entries, no version_refs): Open migrates it, old versions
// are unknown to a filtered history (they never match), new ones match.
func TestMigrateFromVersion2(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir)
	subject := storage.Entry{Param: "subject", Kind: storage.KindReference, RefType: "Patient", RefID: "p1"}
	put(t, b, "Observation", "o", 0, subject)
	for _, s := range []string{`ALTER TABLE versions DROP COLUMN entries`, `DROP TABLE version_refs`, `UPDATE schema_version SET version = 2`} {
		if _, err := b.w.ExecContext(t.Context(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	b.Close()
	b = openT(t, dir)
	defer b.Close()
	var v int
	if err := b.r.QueryRowContext(t.Context(), `SELECT version FROM schema_version`).Scan(&v); err != nil || v != schemaVersion {
		t.Fatalf("schema version after migration = %d, %v; want %d", v, err, schemaVersion)
	}
	put(t, b, "Observation", "o", 1, subject)
	filter := storage.Match{Param: "subject", Kind: storage.KindReference, Cond: storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: "p1"}}
	all, err := b.History(t.Context(), storage.HistoryRequest{Type: "Observation"})
	if err != nil || len(all.Records) != 2 {
		t.Fatalf("unfiltered history: %d records, %v; want 2", len(all.Records), err)
	}
	p, err := b.History(t.Context(), storage.HistoryRequest{Type: "Observation", Filter: filter})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Records) != 1 || p.Records[0].VersionID != 2 {
		t.Fatalf("filtered history after migration: %+v; want only version 2 (version 1 has no stored entries)", p.Records)
	}
}

// TestFilteredHistoryPlan checks that a compartment-filtered history is
// driven by version_refs, not by reading every version of the type.
func TestFilteredHistoryPlan(t *testing.T) {
	b := openT(t, t.TempDir())
	defer b.Close()
	ref := func(param string) storage.Expr {
		return storage.Match{Param: param, Kind: storage.KindReference, Cond: storage.And{Exprs: []storage.Expr{
			storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: "Patient"},
			storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: "p1"}}}}
	}
	code := storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "x"}}
	for _, c := range []struct {
		name     string
		req      storage.HistoryRequest
		fullScan bool
	}{
		{"one reference", storage.HistoryRequest{Type: "Observation", Filter: ref("subject")}, false},
		{"compartment", storage.HistoryRequest{Type: "Observation", Filter: storage.Or{Exprs: []storage.Expr{ref("subject"), ref("performer")}}}, false},
		{"compartment and query", storage.HistoryRequest{Type: "Observation", Filter: storage.And{Exprs: []storage.Expr{code, ref("subject")}}}, false},
		{"per type", storage.HistoryRequest{TypeFilters: map[string]storage.Expr{"Observation": ref("subject"), "Patient": storage.IDs{IDs: []string{"p1"}}}}, false},
		{"query only", storage.HistoryRequest{Type: "Observation", Filter: code}, true},
	} {
		h, err := planHistory(c.req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		rows, err := b.r.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+h.sql, h.args...)
		if err != nil {
			t.Fatalf("%s: explain: %v", c.name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		text := strings.Join(plan, " | ")
		// A narrowed plan reaches versions through their primary key
		// (seq) or the (type, id, version) key; "SCAN v" or a walk of the
		// whole type's versions reads them all.
		scans := strings.Contains(text, "SCAN v") || strings.Contains(text, "versions_type_seq (type=?)") ||
			strings.Contains(text, "SCAN version_refs")
		if scans != c.fullScan {
			t.Errorf("%s: full scan %v, want %v; plan: %s", c.name, scans, c.fullScan, text)
		}
	}
}

// TestFilteredHistoryContainsNarrowing: the mayMatch bound of a query-only
// filter never drops a version that matches, whatever the characters of
// the value (quotes, HTML characters, non-ASCII, escapes), in plain and
// composite entries.
func TestFilteredHistoryContainsNarrowing(t *testing.T) {
	b := openT(t, t.TempDir())
	defer b.Close()
	odd := "a\"b<c>&d\\é\u2028x"
	put(t, b, "Observation", "odd", 0,
		storage.Entry{Param: "code", Kind: storage.KindToken, System: "urn:s", Code: odd},
		storage.Entry{Param: "combo", Kind: storage.KindComposite, Parts: []storage.Entry{{Kind: storage.KindToken, Code: odd}, {Kind: storage.KindString, Exact: "Zoë"}}})
	put(t, b, "Observation", "plain", 0, storage.Entry{Param: "code", Kind: storage.KindToken, System: "urn:s", Code: "abc"})
	eq := func(f storage.Field, v string) storage.Cmp { return storage.Cmp{Field: f, Op: storage.OpEq, Value: v} }
	for _, c := range []struct {
		name   string
		filter storage.Expr
		want   string
	}{
		{"odd code", storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.And{Exprs: []storage.Expr{eq(storage.FieldSystem, "urn:s"), eq(storage.FieldCode, odd)}}}, "odd"},
		{"plain code", storage.Match{Param: "code", Kind: storage.KindToken, Cond: eq(storage.FieldCode, "abc")}, "plain"},
		{"prefix is not narrowed away", storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpPrefix, Value: "a\""}}, "odd"},
		{"composite parts", storage.Match{Param: "combo", Kind: storage.KindComposite, Cond: storage.And{Exprs: []storage.Expr{
			storage.Part{Index: 0, Cond: eq(storage.FieldCode, odd)}, storage.Part{Index: 1, Cond: eq(storage.FieldExact, "Zoë")}}}}, "odd"},
		{"other kind", storage.Match{Param: "code", Kind: storage.KindString, Cond: eq(storage.FieldCode, "abc")}, ""},
		{"or of both", storage.Or{Exprs: []storage.Expr{
			storage.Match{Param: "code", Kind: storage.KindToken, Cond: eq(storage.FieldCode, "abc")},
			storage.Match{Param: "combo", Kind: storage.KindComposite}}}, "plain odd"},
	} {
		p, err := b.History(t.Context(), storage.HistoryRequest{Type: "Observation", Filter: c.filter})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var got []string
		for _, r := range p.Records {
			got = append(got, r.ID)
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("%s: got %v, want %q", c.name, got, c.want)
		}
	}
}
