package fhir_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// seenObserver enriches every Patient it sees (active=true) and derives a
// Basic "seen-<id>" per Patient change, one version per change, so that a
// test can count from storage alone how many changes each path reported.
// It refuses a Patient named "refuse" to show a refusal stores nothing.
type seenObserver struct {
	mu   sync.Mutex
	seen []string // "type/id" or "type/id deleted", primary writes only
}

func (o *seenObserver) ObserveCommit(ctx context.Context, cs *fhir.CommitSet) error {
	derived := map[string]int64{} // Basic id -> version written in this set
	for i := 0; i < cs.Len(); i++ {
		if cs.Derived(i) {
			continue
		}
		w := cs.Write(i)
		key := w.Type + "/" + w.ID
		if w.Deleted {
			key += " deleted"
		}
		o.mu.Lock()
		o.seen = append(o.seen, key)
		o.mu.Unlock()
		if w.Type != "Patient" {
			continue
		}
		id := "seen-" + w.ID
		cur, ok := derived[id]
		if !ok {
			rec, err := cs.Backend().Read(ctx, "Basic", id)
			switch {
			case err == nil:
				cur = rec.VersionID
			case errors.Is(err, storage.ErrNotFound):
			default:
				return err
			}
		}
		if err := cs.Put(map[string]any{
			"resourceType": "Basic", "id": id,
			"code": map[string]any{"text": key},
		}, cur); err != nil {
			return err
		}
		derived[id] = cur + 1
		if w.Deleted {
			continue
		}
		var res map[string]any
		if err := json.Unmarshal(w.JSON, &res); err != nil {
			return err
		}
		if name, _ := get(res, "name", 0, "family").(string); name == "refuse" {
			return errors.New("refusing the Patient named refuse")
		}
		res["active"] = true
		if err := cs.Replace(i, res); err != nil {
			return err
		}
	}
	return nil
}

func (o *seenObserver) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.seen
	o.seen = nil
	return s
}

// TestCommitObserverEveryWritePath drives every write path of the server
// and checks that the observer saw each change, that its enrichment is
// what the caller got back and what storage holds, and that its derived
// write landed with the change.
func TestCommitObserverEveryWritePath(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			obs := &seenObserver{}
			b := be.open(t)
			c, srv := startServer(t, b, func(cfg *fhir.Config) { cfg.Observers = []fhir.CommitObserver{obs} })
			pat := func(id, family string) string {
				if id == "" { // a create: the server assigns the id
					return fmt.Sprintf(`{"resourceType":"Patient","identifier":[{"system":"urn:t","value":%q}],"name":[{"family":%q}]}`, family, family)
				}
				return fmt.Sprintf(`{"resourceType":"Patient","id":%q,"identifier":[{"system":"urn:t","value":%q}],"name":[{"family":%q}]}`, id, id, family)
			}
			// seenVersions is how many changes the observer derived for id.
			seenVersions := func(id string) int64 {
				rec, err := b.Read(context.Background(), "Basic", "seen-"+id)
				if errors.Is(err, storage.ErrNotFound) {
					return 0
				}
				if err != nil {
					t.Fatal(err)
				}
				return rec.VersionID
			}
			active := func(id string) any {
				rec, err := b.Read(context.Background(), "Patient", id)
				if err != nil {
					return err
				}
				if rec.Deleted {
					return "deleted"
				}
				var res map[string]any
				_ = json.Unmarshal(rec.JSON, &res)
				return res["active"]
			}
			created := c.do("POST", "/Patient", pat("", "a")).expect(t, 201).json(t)
			a, _ := created["id"].(string)
			if created["active"] != true {
				t.Errorf("create: the response lacks the observer's enrichment: %v", created)
			}
			steps := []struct {
				name   string
				do     func()
				id     string // Patient whose derived count grows by one
				stored any    // Patient.active in storage after the step
			}{
				{"conditional create", func() {
					c.do("POST", "/Patient", pat("", "b"), "If-None-Exist: identifier=urn:t|b").expect(t, 201)
				}, "", true},
				{"update", func() {
					c.do("PUT", "/Patient/u1", pat("u1", "u")).expect(t, 201)
				}, "u1", true},
				{"conditional update", func() {
					c.do("PUT", "/Patient?identifier=urn:t|u1", pat("u1", "u2")).expect(t, 200)
				}, "u1", true},
				{"patch", func() {
					c.do("PATCH", "/Patient/u1", `[{"op":"replace","path":"/name/0/family","value":"p"}]`, "Content-Type: application/json-patch+json").expect(t, 200)
				}, "u1", true},
				{"delete", func() { c.do("DELETE", "/Patient/"+a, "").expect(t, 204) }, a, "deleted"},
				{"transaction", func() {
					c.do("POST", "/", `{"resourceType":"Bundle","type":"transaction","entry":[
						{"resource":`+pat("t1", "t")+`,"request":{"method":"PUT","url":"Patient/t1"}},
						{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/t1"}},"request":{"method":"POST","url":"Observation"}}]}`).expect(t, 200)
				}, "t1", true},
				{"batch", func() {
					c.do("POST", "/", `{"resourceType":"Bundle","type":"batch","entry":[
						{"resource":`+pat("b1", "b")+`,"request":{"method":"PUT","url":"Patient/b1"}}]}`).expect(t, 200)
				}, "b1", true},
				{"conditional delete", func() { c.do("DELETE", "/Patient?identifier=urn:t|b1", "").expect(t, 204) }, "b1", "deleted"},
			}
			for _, st := range steps {
				before := int64(0)
				if st.id != "" {
					before = seenVersions(st.id)
				}
				obs.take()
				st.do()
				if len(obs.take()) == 0 {
					t.Errorf("%s: the observer saw nothing", st.name)
				}
				if st.id == "" {
					continue
				}
				if got := seenVersions(st.id); got != before+1 {
					t.Errorf("%s: derived Basic/seen-%s at version %d, want %d", st.name, st.id, got, before+1)
				}
				if got := active(st.id); got != st.stored {
					t.Errorf("%s: Patient/%s active = %v in storage, want %v", st.name, st.id, got, st.stored)
				}
			}

			// Bulk import, the path that bypasses the REST handlers.
			dir := t.TempDir()
			file := filepath.Join(dir, "Patient.ndjson")
			if err := os.WriteFile(file, []byte(pat("i1", "i")+"\n"+pat("i2", "i")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			obs.take()
			if _, err := srv.Importer().ImportPaths(context.Background(), []string{file}, fhir.ImportOptions{Restart: true}); err != nil {
				t.Fatal(err)
			}
			if seen := obs.take(); len(seen) != 2 {
				t.Errorf("import: observer saw %v, want the two Patients", seen)
			}
			for _, id := range []string{"i1", "i2"} {
				if seenVersions(id) != 1 || active(id) != true {
					t.Errorf("import: Patient/%s derived %d, active %v; want 1 and true", id, seenVersions(id), active(id))
				}
			}

			// A refusal by the observer stores nothing of the change: not
			// the transaction's other entries, not what it derived.
			c.do("POST", "/", `{"resourceType":"Bundle","type":"transaction","entry":[
				{"resource":`+pat("r1", "fine")+`,"request":{"method":"PUT","url":"Patient/r1"}},
				{"resource":`+pat("r2", "refuse")+`,"request":{"method":"PUT","url":"Patient/r2"}}]}`).expect(t, 500)
			for _, id := range []string{"r1", "r2"} {
				if _, err := b.Read(context.Background(), "Patient", id); !errors.Is(err, storage.ErrNotFound) {
					t.Errorf("refused transaction: Patient/%s read %v, want not found", id, err)
				}
				if n := seenVersions(id); n != 0 {
					t.Errorf("refused transaction: derived Basic/seen-%s exists (version %d)", id, n)
				}
			}
		})
	}
}

// TestCommitOnlyThroughObservers fails when code in package fhir commits
// to the backend from a function that does not run the observers first:
// a new write path must go through Server.commit or call observe itself.
func TestCommitOnlyThroughObservers(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	commits := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			var commitAt []token.Pos
			observed := false
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if sel.Sel.Name == "observe" {
					observed = true
				}
				if inner, ok := sel.X.(*ast.SelectorExpr); ok && sel.Sel.Name == "Commit" && inner.Sel.Name == "backend" && fn.Name.Name != "commitObserved" {
					commitAt = append(commitAt, call.Pos())
				}
				// commitObserved commits what its caller observed: the
				// caller must run the observers.
				if sel.Sel.Name == "commitObserved" {
					commitAt = append(commitAt, call.Pos())
				}
				return true
			})
			commits += len(commitAt)
			if len(commitAt) > 0 && !observed {
				for _, p := range commitAt {
					t.Errorf("%s: %s commits to the backend without running the commit observers", fset.Position(p), fn.Name.Name)
				}
			}
		}
	}
	if commits == 0 {
		t.Fatal("found no backend.Commit call at all: the check is looking in the wrong place")
	}
}
