package sqlite

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

// TestCodecPinned holds the on-disk encoding of schema 5: the committed
// dictionaries are unchanged and committed compressed samples (written by
// this code when the format was introduced) decode to their plain JSON.
func TestCodecPinned(t *testing.T) {
	for name, want := range map[string]string{
		"zdict/json-1.dict":    "e7b19f27dd34d72dd4acbfe928b454711e38fecc4ad667bbadfaf983af937fb3",
		"zdict/entries-1.dict": "8720e3e11877922a46960a3907d4aa8b2a7f7afdf2e3610b4b1dabceed674b25",
	} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != want {
			t.Errorf("%s changed (sha256 %x): a committed dictionary is part of the format; add a new one with a new tag", name, h)
		}
	}
	cd, err := newCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer cd.close()
	for _, c := range []struct {
		sample, plain string
		tag           byte
	}{
		{"testdata/codec/json-1.bin", "testdata/codec/json-1.json", tagJSON1},
		{"testdata/codec/entries-1.bin", "testdata/codec/entries-1.json", tagEntries1},
	} {
		stored, err := os.ReadFile(c.sample)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := os.ReadFile(c.plain)
		if err != nil {
			t.Fatal(err)
		}
		if stored[0] != c.tag {
			t.Errorf("%s: tag %#x, want %#x", c.sample, stored[0], c.tag)
		}
		got, err := cd.decode(stored)
		if err != nil {
			t.Fatalf("%s: %v", c.sample, err)
		}
		if !bytes.Equal(got, plain) {
			t.Errorf("%s decodes to %q, want %q", c.sample, got, plain)
		}
		if len(stored)*3 > len(plain) {
			t.Errorf("%s: %d bytes for %d of JSON: the dictionary does not pay", c.sample, len(stored), len(plain))
		}
	}
	// Plain JSON (rows before schema 5) reads as it is; a corrupt frame is
	// an error, never bytes handed out.
	for _, plain := range []string{`{"a":1}`, `[]`} {
		if got, err := cd.decode([]byte(plain)); err != nil || string(got) != plain {
			t.Errorf("decode(%s) = %q, %v", plain, got, err)
		}
	}
	if _, err := cd.decode([]byte{tagJSON1, 1, 2}); err == nil {
		t.Error("a corrupt frame decoded")
	}
	// Whatever bytes are handed over come back (the store never looks
	// inside them), including ones that start like a tag.
	for _, raw := range [][]byte{[]byte("0"), {tagJSON1}, {tagEntries1, 0}, []byte(`{"x":"` + string(make([]byte, 5000)) + `"}`)} {
		if got, err := cd.decode(cd.encodeJSON(raw)); err != nil || !bytes.Equal(got, raw) {
			t.Errorf("round trip of %q: %q, %v", raw[:min(len(raw), 10)], got[:min(len(got), 10)], err)
		}
	}
}

// TestSchema4PlainRowsRead: a database of schema 4 (plain JSON in
// versions.json and versions.entries) opens, is marked 5, and its rows
// read, search and filter in history as before; new rows are compressed.
func TestSchema4PlainRowsRead(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir)
	code := storage.Entry{Param: "code", Kind: storage.KindToken, System: "http://loinc.org", Code: "72514-3"}
	subj := storage.Entry{Param: "subject", Kind: storage.KindReference, RefType: "Patient", RefID: "p1"}
	old := put(t, b, "Observation", "old", 0, code, subj)
	// Make it a row of schema 4: what that code wrote (the plain JSON).
	plainEntries, err := json.Marshal([]storage.Entry{code, subj})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		q    string
		args []any
	}{
		{`UPDATE versions SET json = ?, entries = ? WHERE seq = ?`, []any{old.JSON, plainEntries, old.Seq}},
		{`UPDATE schema_version SET version = 4`, nil},
	} {
		if _, err := b.w.ExecContext(t.Context(), s.q, s.args...); err != nil {
			t.Fatal(err)
		}
	}
	b.Close()

	b = openT(t, dir)
	defer b.Close()
	var v int
	if err := b.r.QueryRowContext(t.Context(), `SELECT version FROM schema_version`).Scan(&v); err != nil || v != schemaVersion {
		t.Fatalf("schema version = %d, %v; want %d", v, err, schemaVersion)
	}
	newer := put(t, b, "Observation", "new", 0, code, subj)
	var oldStored, newStored []byte
	if err := b.r.QueryRowContext(t.Context(), `SELECT json FROM versions WHERE seq = ?`, old.Seq).Scan(&oldStored); err != nil {
		t.Fatal(err)
	}
	if err := b.r.QueryRowContext(t.Context(), `SELECT json FROM versions WHERE seq = ?`, newer.Seq).Scan(&newStored); err != nil {
		t.Fatal(err)
	}
	if oldStored[0] != '{' || newStored[0] != tagJSON1 {
		t.Fatalf("stored json: old %q, new %q; want the old plain and the new tagged %#x", oldStored[:1], newStored[:1], tagJSON1)
	}
	for _, id := range []string{"old", "new"} {
		r, err := b.Read(t.Context(), "Observation", id)
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"resourceType":"Observation","id":"` + id + `"}`; string(r.JSON) != want {
			t.Errorf("Read %s: %s, want %s", id, r.JSON, want)
		}
	}
	p, err := b.Search(t.Context(), storage.Query{Types: []string{"Observation"}, Count: 10, Filter: storage.Match{Param: "code", Kind: storage.KindToken,
		Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "72514-3"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Records) != 2 || string(p.Records[0].JSON) == "" || p.Records[0].JSON[0] != '{' || p.Records[1].JSON[0] != '{' {
		t.Errorf("search: %d records %v", len(p.Records), p.Records)
	}
	for _, f := range []storage.Expr{
		storage.Match{Param: "code", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "72514-3"}},
		storage.Match{Param: "subject", Kind: storage.KindReference, Cond: storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: "p1"}},
	} {
		h, err := b.History(t.Context(), storage.HistoryRequest{Type: "Observation", Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Records) != 2 || h.Records[0].ID != "new" || h.Records[1].ID != "old" || h.Records[1].JSON[0] != '{' {
			t.Errorf("history filtered by %v: %v", f, h.Records)
		}
	}
}
