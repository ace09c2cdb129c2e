package mongo

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/anodyne-fhir/anodyne/storage"
)

// TestHistoryEntriesPinned holds the stored shape of a version's own
// entries in the history collection (k, e, ek) and the copy a delete
// keeps, for single writes and for a multi-write commit.
func TestHistoryEntriesPinned(t *testing.T) {
	b := fresh(t)
	ctx := t.Context()
	at := time.Date(2024, 3, 1, 8, 0, 0, 0, time.UTC)
	write := func(id string, v int64, del bool, idx ...storage.Entry) storage.Write {
		w := storage.Write{Record: storage.Record{Type: "Observation", ID: id, VersionID: v, LastUpdated: at, Method: "PUT"}, ExpectVersion: v - 1, Index: idx}
		if del {
			w.Deleted, w.Method = true, "DELETE"
		} else {
			w.JSON = []byte(`{"resourceType":"Observation"}`)
		}
		return w
	}
	subject := storage.Entry{Param: "subject", Kind: storage.KindReference, RefType: "Patient", RefID: "p1"}
	code := storage.Entry{Param: "code", Kind: storage.KindToken, System: "http://loinc.org", Code: "72514-3"}
	if _, err := b.Commit(ctx, write("o", 1, false, subject, code)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(ctx, write("o", 2, true)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(ctx, write("none", 1, false)); err != nil {
		t.Fatal(err)
	}
	// In one commit: a create and its delete; the delete copies the
	// create's entries, not a stored version's (there is none).
	if _, err := b.Commit(ctx, write("pair", 1, false, subject), write("pair", 2, true)); err != nil {
		t.Fatal(err)
	}
	raw := func(id string) string {
		t.Helper()
		var m bson.M
		if err := b.hist.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&m); err != nil {
			t.Fatalf("history document %s: %v", id, err)
		}
		out := bson.M{}
		for _, k := range []string{"k", "e", "ek"} {
			if v, ok := m[k]; ok {
				out[k] = v
			}
		}
		j, err := json.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		return string(j)
	}
	// ␟ stands for the key separator U+001F, which JSON escapes.
	want := strings.ReplaceAll(`{"e":[{"p":"subject","k":3,"rt":"Patient","ri":"p1"},{"p":"code","k":2,"s":"http://loinc.org","c":"72514-3"}],`+
		`"ek":true,"k":["code␟2","code␟2␟3␟http://loinc.org","code␟2␟4␟72514-3","subject␟3","subject␟3␟5␟Patient","subject␟3␟6␟p1","subject␟3␟ref␟Patient/p1"]}`,
		"␟", `\u001f`)
	for _, c := range []struct{ id, want string }{
		{"Observation/o/1", want},
		{"Observation/o/2", want},
		{"Observation/none/1", `{"ek":true}`},
	} {
		if got := raw(c.id); got != c.want {
			t.Errorf("%s:\n got  %s\n want %s", c.id, got, c.want)
		}
	}
	if a, d := raw("Observation/pair/1"), raw("Observation/pair/2"); a != d || a == `{"ek":true}` {
		t.Errorf("delete in the same commit: create %s, delete %s; want the same entries", a, d)
	}
}
