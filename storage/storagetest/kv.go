package storagetest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// shortTTL is long enough to be set and short enough to wait out.
const shortTTL = 50 * time.Millisecond

var kvCases = []testCase{
	{"PutGetDelete", func(t *testing.T, e *env) {
		kv := e.b.KV()
		_, err := kv.Get(e.ctx, "a")
		wantErr(t, err, storage.ErrNotFound, "Get of absent key")
		val := []byte{0, 1, 2, 0xff, '"', '\\'}
		if err := kv.Put(e.ctx, "a", val, 0); err != nil {
			t.Fatal(err)
		}
		got, err := kv.Get(e.ctx, "a")
		if err != nil || !bytes.Equal(got, val) {
			t.Fatalf("Get = %q, %v; want %q", got, err, val)
		}
		if err := kv.Put(e.ctx, "a", []byte("second"), time.Hour); err != nil {
			t.Fatal(err)
		}
		got, err = kv.Get(e.ctx, "a")
		if err != nil || string(got) != "second" {
			t.Fatalf("Get after overwrite = %q, %v", got, err)
		}
		if err := kv.Delete(e.ctx, "a"); err != nil {
			t.Fatal(err)
		}
		_, err = kv.Get(e.ctx, "a")
		wantErr(t, err, storage.ErrNotFound, "Get after Delete")
		if err := kv.Delete(e.ctx, "a"); err != nil {
			t.Fatalf("Delete of absent key: %v", err)
		}
	}},
	{"Expiry", func(t *testing.T, e *env) {
		kv := e.b.KV()
		for _, k := range []string{"x/get", "x/take", "x/absent"} {
			if err := kv.Put(e.ctx, k, []byte("v"), shortTTL); err != nil {
				t.Fatal(err)
			}
		}
		if err := kv.Put(e.ctx, "x/live", []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * shortTTL)
		_, err := kv.Get(e.ctx, "x/get")
		wantErr(t, err, storage.ErrNotFound, "Get of expired key")
		_, err = kv.Take(e.ctx, "x/take")
		wantErr(t, err, storage.ErrNotFound, "Take of expired key")
		won, err := kv.PutIfAbsent(e.ctx, "x/absent", []byte("new"), 0)
		if err != nil || !won {
			t.Fatalf("PutIfAbsent over an expired key = %v, %v; want true", won, err)
		}
		keys, err := kv.List(e.ctx, "x/")
		if err != nil {
			t.Fatal(err)
		}
		wantList(t, keys, []string{"x/absent", "x/live"}, "List skips expired keys")
		got, err := kv.Get(e.ctx, "x/absent")
		if err != nil || string(got) != "new" {
			t.Fatalf("Get = %q, %v", got, err)
		}
	}},
	{"TakeSingleUse", func(t *testing.T, e *env) {
		kv := e.b.KV()
		if err := kv.Put(e.ctx, "code", []byte("v"), time.Minute); err != nil {
			t.Fatal(err)
		}
		const n = 8
		var wg sync.WaitGroup
		vals := make([][]byte, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { vals[i], errs[i] = kv.Take(e.ctx, "code") })
		}
		wg.Wait()
		took := 0
		for i := range n {
			switch {
			case errs[i] == nil:
				took++
				if string(vals[i]) != "v" {
					t.Fatalf("Take = %q", vals[i])
				}
			default:
				wantErr(t, errs[i], storage.ErrNotFound, "losing Take")
			}
		}
		if took != 1 {
			t.Fatalf("%d Takes succeeded, want exactly 1", took)
		}
		_, err := kv.Get(e.ctx, "code")
		wantErr(t, err, storage.ErrNotFound, "Get after Take")
	}},
	{"PutIfAbsent", func(t *testing.T, e *env) {
		kv := e.b.KV()
		won, err := kv.PutIfAbsent(e.ctx, "k", []byte("first"), time.Hour)
		if err != nil || !won {
			t.Fatalf("first PutIfAbsent = %v, %v", won, err)
		}
		won, err = kv.PutIfAbsent(e.ctx, "k", []byte("second"), time.Hour)
		if err != nil || won {
			t.Fatalf("second PutIfAbsent = %v, %v; want false", won, err)
		}
		got, err := kv.Get(e.ctx, "k")
		if err != nil || string(got) != "first" {
			t.Fatalf("Get = %q, %v; want first", got, err)
		}
	}},
	{"PutIfAbsentRace", func(t *testing.T, e *env) {
		kv := e.b.KV()
		const n = 8
		var wg sync.WaitGroup
		wins := make([]bool, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { wins[i], errs[i] = kv.PutIfAbsent(e.ctx, "race", fmt.Appendf(nil, "v%d", i), time.Hour) })
		}
		wg.Wait()
		winner := -1
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("PutIfAbsent: %v", errs[i])
			}
			if wins[i] {
				if winner >= 0 {
					t.Fatalf("PutIfAbsent won by %d and %d", winner, i)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatal("nobody won PutIfAbsent")
		}
		got, err := kv.Get(e.ctx, "race")
		if err != nil || string(got) != fmt.Sprintf("v%d", winner) {
			t.Fatalf("Get = %q, %v; want the winner's v%d", got, err, winner)
		}
	}},
	{"ListByPrefix", func(t *testing.T, e *env) {
		kv := e.b.KV()
		for _, k := range []string{"auth/b", "auth/a", "authx", "job/1", "a%_1", "ab_1", "auth/c/d"} {
			if err := kv.Put(e.ctx, k, []byte(k), 0); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []struct {
			prefix string
			want   []string
		}{
			{"auth/", []string{"auth/a", "auth/b", "auth/c/d"}},
			{"auth", []string{"auth/a", "auth/b", "auth/c/d", "authx"}},
			{"a%", []string{"a%_1"}},
			{"a_", nil},
			{"nothing", nil},
			{"", []string{"a%_1", "ab_1", "auth/a", "auth/b", "auth/c/d", "authx", "job/1"}},
		} {
			got, err := kv.List(e.ctx, c.prefix)
			if err != nil {
				t.Fatalf("List(%q): %v", c.prefix, err)
			}
			wantList(t, got, c.want, fmt.Sprintf("List(%q)", c.prefix))
		}
	}},
}

var durabilityCases = []testCase{
	{"Reopen", func(t *testing.T, e *env) {
		if e.h.Reopen == nil {
			t.Skip("harness has no Reopen")
		}
		e.put("Patient", "p1", str("name", "Ann"))
		e.put("Patient", "p1", str("name", "Anna"))
		w := e.write("Patient", "p2", 0, str("name", "Bea"))
		w.Claim = "claim-p2"
		e.commit(w)
		e.put("Patient", "p3")
		last := e.del("Patient", "p3")
		if err := e.b.KV().Put(e.ctx, "k", []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
		before := e.history(storage.HistoryRequest{})

		e.reopen()

		after := e.history(storage.HistoryRequest{})
		wantList(t, versions(after), versions(before), "history after reopen")
		for i := range after {
			if after[i].Seq != before[i].Seq || !bytes.Equal(after[i].JSON, before[i].JSON) {
				t.Fatalf("version %d changed across reopen: %+v vs %+v", i, after[i], before[i])
			}
		}
		r, err := e.b.ReadVersion(e.ctx, "Patient", "p1", 1)
		if err != nil || !bytes.Equal(r.JSON, body("Patient", "p1", 1)) {
			t.Fatalf("ReadVersion after reopen = %+v, %v", r, err)
		}
		if r, err := e.b.Read(e.ctx, "Patient", "p3"); err != nil || !r.Deleted {
			t.Fatalf("deleted resource after reopen = %+v, %v", r, err)
		}
		p := e.search(storage.Query{Filter: match("name", sk, cmp(storage.FieldText, storage.OpPrefix, "a")), Count: 10})
		wantList(t, refs(p.Records), []string{"Patient/p1"}, "search after reopen")
		if got, err := e.b.KV().Get(e.ctx, "k"); err != nil || string(got) != "v" {
			t.Fatalf("KV after reopen = %q, %v", got, err)
		}
		w2 := e.write("Patient", "p9", 0)
		w2.Claim = "claim-p2"
		_, err = e.b.Commit(e.ctx, w2)
		wantErr(t, err, storage.ErrDuplicateClaim, "claim after reopen")
		if next := e.put("Patient", "p4"); next.Seq <= last.Seq {
			t.Fatalf("Seq after reopen %d, not above %d", next.Seq, last.Seq)
		}
		if err := e.b.Ping(e.ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	}},
}

var contextCases = []testCase{
	{"Cancelled", func(t *testing.T, e *env) {
		e.put("Patient", "p1", str("name", "Ann"))
		if err := e.b.KV().Put(e.ctx, "k", []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(e.ctx)
		cancel()
		kv := e.b.KV()
		calls := map[string]func() error{
			"Commit": func() error { _, err := e.b.Commit(ctx, e.write("Patient", "p2", 0)); return err },
			"Read":   func() error { _, err := e.b.Read(ctx, "Patient", "p1"); return err },
			"ReadVersion": func() error {
				_, err := e.b.ReadVersion(ctx, "Patient", "p1", 1)
				return err
			},
			"History": func() error { _, err := e.b.History(ctx, storage.HistoryRequest{}); return err },
			"Search": func() error {
				_, err := e.b.Search(ctx, storage.Query{Filter: match("name", sk, nil), Count: 10, Total: true})
				return err
			},
			"Ping":        func() error { return e.b.Ping(ctx) },
			"KV.Put":      func() error { return kv.Put(ctx, "k2", []byte("v"), 0) },
			"KV.Get":      func() error { _, err := kv.Get(ctx, "k"); return err },
			"KV.Take":     func() error { _, err := kv.Take(ctx, "k"); return err },
			"KV.Delete":   func() error { return kv.Delete(ctx, "k") },
			"KV.List":     func() error { _, err := kv.List(ctx, ""); return err },
			"PutIfAbsent": func() error { _, err := kv.PutIfAbsent(ctx, "k3", []byte("v"), 0); return err },
		}
		for name, call := range calls {
			if err := call(); err == nil {
				t.Errorf("%s with a cancelled context succeeded", name)
			}
		}
		_, err := e.b.Read(e.ctx, "Patient", "p2")
		wantErr(t, err, storage.ErrNotFound, "resource of a cancelled Commit")
		if got, err := kv.Get(e.ctx, "k"); err != nil || string(got) != "v" {
			t.Fatalf("KV key after cancelled Take/Delete = %q, %v", got, err)
		}
	}},
}
