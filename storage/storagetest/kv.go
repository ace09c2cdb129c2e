package storagetest

import (
	"bytes"
	"context"
	"errors"
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
	{"CompareAndSwap", func(t *testing.T, e *env) {
		kv := e.b.KV()
		swapped, err := kv.CompareAndSwap(e.ctx, "cas", nil, []byte("x"), time.Hour)
		if err != nil || swapped {
			t.Fatalf("CompareAndSwap of an absent key = %v, %v; want false", swapped, err)
		}
		if _, err := kv.Get(e.ctx, "cas"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("CompareAndSwap of an absent key created it: %v", err)
		}
		if err := kv.Put(e.ctx, "cas", []byte("one"), shortTTL); err != nil {
			t.Fatal(err)
		}
		swapped, err = kv.CompareAndSwap(e.ctx, "cas", []byte("other"), []byte("two"), time.Hour)
		if err != nil || swapped {
			t.Fatalf("CompareAndSwap with a wrong old value = %v, %v; want false", swapped, err)
		}
		// The swap replaces the expiry too: shortTTL becomes none.
		swapped, err = kv.CompareAndSwap(e.ctx, "cas", []byte("one"), []byte("two"), 0)
		if err != nil || !swapped {
			t.Fatalf("CompareAndSwap with the right old value = %v, %v; want true", swapped, err)
		}
		time.Sleep(2 * shortTTL)
		if got, err := kv.Get(e.ctx, "cas"); err != nil || string(got) != "two" {
			t.Fatalf("Get after swap = %q, %v; want two, without the old expiry", got, err)
		}
		swapped, err = kv.CompareAndSwap(e.ctx, "cas", []byte("one"), []byte("three"), 0)
		if err != nil || swapped {
			t.Fatalf("second CompareAndSwap from the replaced value = %v, %v; want false", swapped, err)
		}
		// Same value, new expiry: the renewal of a lease.
		swapped, err = kv.CompareAndSwap(e.ctx, "cas", []byte("two"), []byte("two"), shortTTL)
		if err != nil || !swapped {
			t.Fatalf("CompareAndSwap to the same value = %v, %v; want true", swapped, err)
		}
		time.Sleep(2 * shortTTL)
		swapped, err = kv.CompareAndSwap(e.ctx, "cas", []byte("two"), []byte("four"), time.Hour)
		if err != nil || swapped {
			t.Fatalf("CompareAndSwap of an expired key = %v, %v; want false", swapped, err)
		}
		if _, err := kv.Get(e.ctx, "cas"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Get of the expired key after a failed swap: %v; want ErrNotFound", err)
		}
		// An empty value compares equal to an empty (or nil) old value.
		if err := kv.Put(e.ctx, "empty", nil, 0); err != nil {
			t.Fatal(err)
		}
		swapped, err = kv.CompareAndSwap(e.ctx, "empty", []byte{}, []byte{0, 0xff}, 0)
		if err != nil || !swapped {
			t.Fatalf("CompareAndSwap from an empty value = %v, %v; want true", swapped, err)
		}
		swapped, err = kv.CompareAndSwap(e.ctx, "empty", []byte{0}, nil, 0)
		if err != nil || swapped {
			t.Fatalf("CompareAndSwap from a prefix of the value = %v, %v; want false", swapped, err)
		}
		if got, err := kv.Get(e.ctx, "empty"); err != nil || !bytes.Equal(got, []byte{0, 0xff}) {
			t.Fatalf("Get = %q, %v", got, err)
		}
	}},
	{"CompareAndSwapRace", func(t *testing.T, e *env) {
		kv := e.b.KV()
		if err := kv.Put(e.ctx, "race", []byte("start"), time.Hour); err != nil {
			t.Fatal(err)
		}
		// Each round, every goroutine tries to move the value it last saw
		// to its own: exactly one may win per round, and the winners'
		// values chain (each winner compared against the previous winner's).
		const n, rounds = 6, 3
		prev := "start"
		for round := range rounds {
			var wg sync.WaitGroup
			wins := make([]bool, n)
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() {
					wins[i], errs[i] = kv.CompareAndSwap(e.ctx, "race", []byte(prev), fmt.Appendf(nil, "r%d-g%d", round, i), time.Hour)
				})
			}
			wg.Wait()
			winner := -1
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("CompareAndSwap: %v", errs[i])
				}
				if wins[i] {
					if winner >= 0 {
						t.Fatalf("round %d: CompareAndSwap won by %d and %d", round, winner, i)
					}
					winner = i
				}
			}
			if winner < 0 {
				t.Fatalf("round %d: nobody won CompareAndSwap", round)
			}
			prev = fmt.Sprintf("r%d-g%d", round, winner)
			if got, err := kv.Get(e.ctx, "race"); err != nil || string(got) != prev {
				t.Fatalf("round %d: Get = %q, %v; want the winner's %s", round, got, err, prev)
			}
		}
	}},
	{"CompareAndDelete", func(t *testing.T, e *env) {
		kv := e.b.KV()
		deleted, err := kv.CompareAndDelete(e.ctx, "cad", []byte("v"))
		if err != nil || deleted {
			t.Fatalf("CompareAndDelete of an absent key = %v, %v; want false", deleted, err)
		}
		if err := kv.Put(e.ctx, "cad", []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
		deleted, err = kv.CompareAndDelete(e.ctx, "cad", []byte("w"))
		if err != nil || deleted {
			t.Fatalf("CompareAndDelete with a wrong value = %v, %v; want false", deleted, err)
		}
		if got, err := kv.Get(e.ctx, "cad"); err != nil || string(got) != "v" {
			t.Fatalf("Get after a refused delete = %q, %v", got, err)
		}
		const n = 6
		var wg sync.WaitGroup
		dels := make([]bool, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { dels[i], errs[i] = kv.CompareAndDelete(e.ctx, "cad", []byte("v")) })
		}
		wg.Wait()
		count := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("CompareAndDelete: %v", errs[i])
			}
			if dels[i] {
				count++
			}
		}
		if count != 1 {
			t.Fatalf("%d CompareAndDeletes succeeded, want exactly 1", count)
		}
		if _, err := kv.Get(e.ctx, "cad"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Get after CompareAndDelete: %v; want ErrNotFound", err)
		}
		// Once expired, the value no longer matches.
		if err := kv.Put(e.ctx, "cad", []byte("v"), shortTTL); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * shortTTL)
		deleted, err = kv.CompareAndDelete(e.ctx, "cad", []byte("v"))
		if err != nil || deleted {
			t.Fatalf("CompareAndDelete of an expired key = %v, %v; want false", deleted, err)
		}
	}},
	{"ExpiredTakeoverRace", func(t *testing.T, e *env) {
		// The holder of an expired record renews it (CompareAndSwap)
		// while others take it over (PutIfAbsent): at most one of all of
		// them may win, whatever the interleaving.
		kv := e.b.KV()
		for round := range 4 {
			key := fmt.Sprintf("takeover/%d", round)
			if err := kv.Put(e.ctx, key, []byte("holder"), shortTTL); err != nil {
				t.Fatal(err)
			}
			time.Sleep(shortTTL + time.Duration(round)*5*time.Millisecond - 10*time.Millisecond)
			const n = 4
			var wg sync.WaitGroup
			wins := make([]bool, n+1)
			errs := make([]error, n+1)
			wg.Go(func() {
				wins[n], errs[n] = kv.CompareAndSwap(e.ctx, key, []byte("holder"), []byte("holder"), time.Hour)
			})
			for i := range n {
				wg.Go(func() { wins[i], errs[i] = kv.PutIfAbsent(e.ctx, key, fmt.Appendf(nil, "taker%d", i), time.Hour) })
			}
			wg.Wait()
			var winners []int
			for i := range n + 1 {
				if errs[i] != nil {
					t.Fatalf("round %d: %v", round, errs[i])
				}
				if wins[i] {
					winners = append(winners, i)
				}
			}
			got, err := kv.Get(e.ctx, key)
			switch {
			case len(winners) > 1:
				t.Fatalf("round %d: %v all won the record", round, winners)
			case len(winners) == 0:
				// Only possible when the renewal lost to nobody: the
				// record expired under it and every taker found it held
				// while the renewal ran.
				t.Logf("round %d: nobody won (%q, %v)", round, got, err)
			case winners[0] == n:
				if err != nil || string(got) != "holder" {
					t.Fatalf("round %d: the renewal won but Get = %q, %v", round, got, err)
				}
			default:
				if want := fmt.Sprintf("taker%d", winners[0]); err != nil || string(got) != want {
					t.Fatalf("round %d: %s won but Get = %q, %v", round, want, got, err)
				}
			}
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
			"CompareAndSwap": func() error {
				_, err := kv.CompareAndSwap(ctx, "k", []byte("v"), []byte("w"), 0)
				return err
			},
			"CompareAndDelete": func() error { _, err := kv.CompareAndDelete(ctx, "k", []byte("v")); return err },
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
