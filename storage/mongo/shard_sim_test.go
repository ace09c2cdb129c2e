package mongo

// This test imports the resources package to build real index entries and
// real search expressions; the backend itself never does (see the package
// doc): the dependency is the test's, to speak about FHIR search shapes.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"slices"
	"sort"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
)

// simShards is the number of shards of the simulated cluster.
const simShards = 4

// simShard is the shard holding shard-key value pk under {pk: "hashed"}
// with the hash space cut into simShards equal chunk ranges, as the
// balancer leaves it on an even load. (MongoDB's hash is MD5-based; any
// uniform hash gives the same targeting, which is what is tested.)
func simShard(pk string) int {
	h := fnv.New64a()
	h.Write([]byte(pk))
	return int(h.Sum64() >> 62)
}

// shardsTouched reads the shard-key condition of a generated filter: the
// shards mongos would send it to.
func shardsTouched(t *testing.T, filter bson.D) []int {
	t.Helper()
	var in []string
	found := false
	var walk func(v any)
	walk = func(v any) {
		switch d := v.(type) {
		case bson.D:
			for _, e := range d {
				if e.Key == "pk" {
					cond, ok := e.Value.(bson.D)
					if !ok || len(cond) != 1 || cond[0].Key != "$in" {
						t.Fatalf("unexpected pk condition %v", e.Value)
					}
					in = append(in, cond[0].Value.([]string)...)
					found = true
					continue
				}
				// Only conjunctions can bound the shards a query touches.
				if e.Key == "$and" {
					for _, x := range e.Value.(bson.A) {
						walk(x)
					}
				}
			}
		}
	}
	walk(filter)
	if !found {
		all := make([]int, simShards)
		for i := range all {
			all[i] = i
		}
		return all
	}
	var shards []int
	for _, pk := range in {
		shards = append(shards, simShard(pk))
	}
	slices.Sort(shards)
	return slices.Compact(shards)
}

// simData writes a small Synthea-shaped data set: patients with very
// different numbers of Observations (the skew of real records), common
// and rare codes, a few Observations performed by another patient (the
// shared partition), and resources of no patient. It returns every
// resource's entries by "Type/id".
func simData(t *testing.T, b *Backend, reg *resources.Registry) map[string][]storage.Entry {
	t.Helper()
	codes := []string{"72514-3", "72514-3", "72514-3", "8867-4", "8867-4", "59408-5", "85354-9", "2339-0", "29463-7", "rare-1"}
	var res []map[string]any
	for p := 0; p < 12; p++ {
		pid := fmt.Sprintf("p%02d", p)
		res = append(res, map[string]any{"resourceType": "Patient", "id": pid, "name": []any{map[string]any{"family": "F" + pid}}})
		n := 1 + (p*p*7)%23 // from 1 to 22 readings: a long tail
		for i := 0; i < n; i++ {
			obs := map[string]any{
				"resourceType": "Observation", "id": fmt.Sprintf("%s-o%d", pid, i), "status": "final",
				"code":              map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": codes[(p+i)%len(codes)]}}},
				"subject":           map[string]any{"reference": "Patient/" + pid},
				"effectiveDateTime": time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Hour).Format(time.RFC3339),
				"valueQuantity":     map[string]any{"value": json.Number(fmt.Sprint(i % 11)), "unit": "{score}"},
			}
			if i == 3 {
				// Reported by another patient (a caregiver who is one):
				// in two compartments.
				obs["performer"] = []any{map[string]any{"reference": fmt.Sprintf("Patient/p%02d", (p+1)%12)}}
			}
			res = append(res, obs)
		}
	}
	for i := 0; i < 3; i++ {
		res = append(res, map[string]any{"resourceType": "Organization", "id": fmt.Sprintf("org%d", i), "name": "Clinic"})
	}
	entries := map[string][]storage.Entry{}
	var writes []storage.Write
	at := time.Now().UTC().Truncate(time.Millisecond)
	for _, r := range res {
		raw, _ := json.Marshal(r)
		var decoded map[string]any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&decoded); err != nil {
			t.Fatal(err)
		}
		typ, id := r["resourceType"].(string), r["id"].(string)
		es, err := reg.Index(typ, decoded)
		if err != nil {
			t.Fatal(err)
		}
		entries[typ+"/"+id] = es
		writes = append(writes, storage.Write{Record: storage.Record{Type: typ, ID: id, VersionID: 1, LastUpdated: at, Method: "PUT", JSON: raw}, Index: es})
	}
	if _, err := b.Commit(t.Context(), writes...); err != nil {
		t.Fatal(err)
	}
	return entries
}

// TestShardTargeting is the sharding simulation: for the search shapes of
// the benchmark it takes the filter the backend generates, reads which
// shards of a {pk: "hashed"} cluster it would touch, and checks that the
// patient-scoped shapes reach at most the patient's shard and the shared
// partition's, while system searches scatter. It also runs every search
// and compares the ids with storage.Matches over all resources, so that
// the pk condition never loses a match.
func TestShardTargeting(t *testing.T) {
	reg, err := resources.Load(resources.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	srv := server.Get(t)
	b, err := Open(t.Context(), srv.URI, mongotest.Database(t), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), WithPartitioning(reg.Partitioning()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if !b.targeting {
		t.Fatal("a fresh partitioned database does not target searches")
	}
	entries := simData(t, b, reg)

	compile := func(typ, code, value string) storage.Expr {
		e, err := reg.Compile(typ, code, "", []string{value})
		if err != nil {
			t.Fatalf("%s?%s=%s: %v", typ, code, value, err)
		}
		return e
	}
	and := func(es ...storage.Expr) storage.Expr { return storage.And{Exprs: es} }
	compartment := func(typ, pid string) storage.Expr {
		var alts []storage.Expr
		if typ == "Patient" {
			alts = append(alts, storage.IDs{IDs: []string{pid}})
		}
		for _, code := range reg.Compartment("Patient", typ) {
			alts = append(alts, compile(typ, code, "Patient/"+pid))
		}
		return storage.Or{Exprs: alts}
	}
	const heavy = "p05" // 1 + 5*5*7 % 23 = 15 readings
	pain := compile("Observation", "code", "http://loinc.org|72514-3")
	shapes := []struct {
		name     string
		q        storage.Query
		targeted bool
	}{
		{"pain trend (patient=id)", storage.Query{Types: []string{"Observation"}, Filter: and(compile("Observation", "patient", heavy), pain), Sort: []storage.Sort{{Param: "date", Kind: storage.KindDate, Desc: true}}, Count: 20}, true},
		{"pain trend (subject=Patient/id)", storage.Query{Types: []string{"Observation"}, Filter: and(compile("Observation", "subject", "Patient/"+heavy), pain), Count: 20}, true},
		{"compartment Patient/id/Observation", storage.Query{Types: []string{"Observation"}, Filter: compartment("Observation", heavy), Count: 100}, true},
		{"patient/ token on a code search", storage.Query{Types: []string{"Observation"}, Filter: and(pain, compartment("Observation", heavy)), Count: 100}, true},
		{"$everything page", storage.Query{Types: []string{"Observation", "Patient"}, Filter: storage.Or{Exprs: []storage.Expr{compartment("Observation", heavy), compartment("Patient", heavy)}}, Count: 100}, false},
		{"Patient by id", storage.Query{Types: []string{"Patient"}, Filter: storage.IDs{IDs: []string{heavy}}, Count: 1}, true},
		{"system: code", storage.Query{Types: []string{"Observation"}, Filter: pain, Count: 100}, false},
		{"system: code and value", storage.Query{Types: []string{"Observation"}, Filter: and(pain, compile("Observation", "value-quantity", "ge7")), Count: 100}, false},
		{"system: Patient by name", storage.Query{Types: []string{"Patient"}, Filter: compile("Patient", "name", "Fp05"), Count: 10}, false},
	}
	for _, s := range shapes {
		t.Run(s.name, func(t *testing.T) {
			_, full, _, err := b.searchFilter(t.Context(), s.q)
			if err != nil {
				t.Fatal(err)
			}
			shards := shardsTouched(t, full)
			want := map[int]bool{simShard("Patient/" + heavy): true}
			if s.q.Types[0] != "Patient" {
				want[simShard(storage.PartitionShared)] = true
			}
			if s.targeted {
				for _, sh := range shards {
					if !want[sh] {
						t.Errorf("touches shards %v; want only the patient's and the shared partition's %v", shards, want)
						break
					}
				}
			} else if len(shards) != simShards {
				t.Errorf("touches shards %v; want all %d (it cannot be narrowed soundly)", shards, simShards)
			}
			t.Logf("shards %v", shards)

			// The answer is the one storage.Matches gives over every resource.
			var want2 []string
			for key, es := range entries {
				typ, id, _ := cut(key)
				if !slices.Contains(s.q.Types, typ) {
					continue
				}
				if ok, err := storage.Matches(s.q.Filter, id, es); err != nil {
					t.Fatal(err)
				} else if ok {
					want2 = append(want2, key)
				}
			}
			q := s.q
			q.Count, q.Sort = 1000, nil
			page, err := b.Search(t.Context(), q)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range page.Records {
				got = append(got, r.Type+"/"+r.ID)
			}
			sort.Strings(got)
			sort.Strings(want2)
			if !slices.Equal(got, want2) {
				t.Errorf("search returned %d resources, storage.Matches %d:\n got %v\nwant %v", len(got), len(want2), got, want2)
			}
			if len(want2) == 0 {
				t.Error("the shape matches nothing: the check is vacuous")
			}
		})
	}
}

func cut(key string) (typ, id string, ok bool) {
	i := bytes.IndexByte([]byte(key), '/')
	if i < 0 {
		return key, "", false
	}
	return key[:i], key[i+1:], true
}

// TestPartitionMarker checks when searches may filter on pk: a fresh
// database from the start; a database with unkeyed data only after
// Partition keyed it (and from the next Open); never with other links;
// and a partitioned database refuses a backend that would write no pk.
func TestPartitionMarker(t *testing.T) {
	quiet := WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	links := storage.Partitioning{Links: map[string][]storage.PartitionLink{"Observation": {{Param: "patient", OnlyPatient: true}}}}
	srv := server.Get(t)
	name := mongotest.Database(t)
	obs := storage.Write{
		Record: storage.Record{Type: "Observation", ID: "o1", VersionID: 1, LastUpdated: time.Now().UTC().Truncate(time.Millisecond), Method: "PUT", JSON: []byte(`{"resourceType":"Observation","id":"o1"}`)},
		Index:  []storage.Entry{{Param: "patient", Kind: storage.KindReference, RefType: "Patient", RefID: "p1"}},
	}
	plain, err := Open(t.Context(), srv.URI, name, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Commit(t.Context(), obs); err != nil {
		t.Fatal(err)
	}
	_ = plain.Close()

	b, err := Open(t.Context(), srv.URI, name, quiet, WithPartitioning(links))
	if err != nil {
		t.Fatal(err)
	}
	if b.targeting {
		t.Error("unkeyed data: targeting is on")
	}
	n, err := b.Partition(t.Context(), func(r storage.Record) ([]storage.Entry, error) { return obs.Index, nil })
	if err != nil || n != 1 {
		t.Fatalf("Partition keyed %d (%v), want 1", n, err)
	}
	_ = b.Close()
	b, err = Open(t.Context(), srv.URI, name, quiet, WithPartitioning(links))
	if err != nil {
		t.Fatal(err)
	}
	if !b.targeting {
		t.Error("after Partition: targeting is off")
	}
	q := storage.Query{Types: []string{"Observation"}, Filter: storage.Match{Param: "patient", Kind: storage.KindReference, Cond: storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: "p1"}}, Count: 10}
	if page, err := b.Search(t.Context(), q); err != nil || len(page.Records) != 1 {
		t.Errorf("targeted search after Partition: %d records (%v), want the keyed one", len(page.Records), err)
	}
	_ = b.Close()

	other := storage.Partitioning{Links: map[string][]storage.PartitionLink{"Observation": {{Param: "subject"}}}}
	if b, err = Open(t.Context(), srv.URI, name, quiet, WithPartitioning(other)); err != nil {
		t.Fatal(err)
	}
	if b.targeting {
		t.Error("other links: targeting is on")
	}
	_ = b.Close()
	if b, err := Open(t.Context(), srv.URI, name, quiet); err == nil {
		_ = b.Close()
		t.Error("a partitioned database opened without partitioning")
	}
}
