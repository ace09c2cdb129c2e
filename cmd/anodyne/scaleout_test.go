package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
)

// freeAddr returns a local address that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serveChild starts "anodyne serve" as a separate process on the given
// MongoDB database and returns its root URL once it listens.
func serveMongoChild(t testing.TB, uri, db string, extra ...string) string {
	t.Helper()
	_, root := serveMongoProc(t, uri, db, extra...)
	return root
}

// serveLogs holds the standard error of each serve child (*exec.Cmd ->
// *syncBuffer).
var serveLogs sync.Map

// serveMongoProc is serveMongoChild that also hands back the process.
func serveMongoProc(t testing.TB, uri, db string, extra ...string) (*exec.Cmd, string) {
	t.Helper()
	addr := freeAddr(t)
	args := append([]string{"serve", "--listen", addr, "--data-dir", t.TempDir(), "--mongodb-uri", uri, "--mongodb-database", db,
		"--auth=off", "--audit=off", "--log-level=warn"}, extra...)
	cmd, _, stderr := child(t, args...)
	// --log-level=warn hides the listening line: poll /readyz instead.
	// The warnings are kept for a failing test to show.
	logs := &syncBuffer{}
	serveLogs.Store(cmd, logs)
	go io.Copy(logs, stderr)
	root := "http://" + addr
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if r, err := http.Get(root + "/readyz"); err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return cmd, root
			}
		}
	}
	t.Fatalf("anodyne serve on %s did not become ready", addr)
	return nil, ""
}

func httpCall(t testing.TB, method, u, body string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/fhir+json")
	if body != "" {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, raw
}

// TestScaleOutProcesses runs two "anodyne serve" processes on one
// FerretDB database: an export accepted by the one that runs no export
// worker is run by the other and served by both; a paging link of one is
// followed on the other (the cursor key lives in the store); conditional
// creates racing across the two create one resource.
func TestScaleOutProcesses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	uri, db := ownFerretDB(ctx, t)
	a := serveMongoChild(t, uri, db, "--export-workers", "0")
	b := serveMongoChild(t, uri, db, "--export-workers", "1", "--lease-ttl", "2s")

	for i := range 4 {
		body := fmt.Sprintf(`{"resourceType":"Patient","id":"p%d","name":[{"family":"Scale"}]}`, i)
		if code, _, raw := httpCall(t, "PUT", fmt.Sprintf("%s/fhir/Patient/p%d", a, i), body); code != http.StatusCreated {
			t.Fatalf("PUT Patient/p%d: %d %s", i, code, raw)
		}
	}

	t.Run("export across processes", func(t *testing.T) {
		code, hdr, raw := httpCall(t, "GET", a+"/fhir/$export?_type=Patient", "", "Prefer: respond-async")
		if code != http.StatusAccepted {
			t.Fatalf("kick-off on a: %d %s", code, raw)
		}
		path := strings.TrimPrefix(hdr.Get("Content-Location"), a)
		var m struct {
			Output []struct {
				URL   string `json:"url"`
				Count int    `json:"count"`
			} `json:"output"`
		}
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			code, _, raw = httpCall(t, "GET", a+path, "")
			if code == http.StatusOK {
				if err := json.Unmarshal(raw, &m); err != nil {
					t.Fatal(err)
				}
				break
			}
			if code != http.StatusAccepted || time.Now().After(deadline) {
				t.Fatalf("status on a: %d %s", code, raw)
			}
		}
		if len(m.Output) != 1 || m.Output[0].Count != 4 {
			t.Fatalf("manifest %+v", m)
		}
		// The file, from the process that ran the job and the one that did not.
		file := strings.TrimPrefix(m.Output[0].URL, a)
		_, _, fromA := httpCall(t, "GET", a+file, "", "Accept: application/fhir+ndjson")
		_, _, fromB := httpCall(t, "GET", b+file, "", "Accept: application/fhir+ndjson")
		if strings.Count(string(fromA), "\n") != 4 || string(fromA) != string(fromB) {
			t.Fatalf("file from a %q, from b %q", fromA, fromB)
		}
	})

	t.Run("paging links across processes", func(t *testing.T) {
		seen := map[string]bool{}
		u := a + "/fhir/Patient?family=Scale&_count=1"
		for page := 0; u != ""; page++ {
			code, _, raw := httpCall(t, "GET", u, "")
			if code != http.StatusOK || page > 10 {
				t.Fatalf("page %d: %d %s", page, code, raw)
			}
			var bundle struct {
				Link  []struct{ Relation, URL string } `json:"link"`
				Entry []struct {
					Resource struct{ ID string } `json:"resource"`
				} `json:"entry"`
			}
			if err := json.Unmarshal(raw, &bundle); err != nil {
				t.Fatal(err)
			}
			for _, e := range bundle.Entry {
				seen[e.Resource.ID] = true
			}
			u = ""
			for _, l := range bundle.Link {
				if l.Relation == "next" {
					// Alternate processes: a's link followed on b, b's on a.
					from, to := a, b
					if page%2 == 1 {
						from, to = b, a
					}
					u = to + strings.TrimPrefix(l.URL, from)
				}
			}
		}
		if len(seen) != 4 {
			t.Fatalf("pages across processes gave %v, want the 4 patients", seen)
		}
	})

	t.Run("conditional creates racing across processes", func(t *testing.T) {
		const n = 6
		var wg sync.WaitGroup
		codes := make([]int, n)
		for i := range n {
			root := []string{a, b}[i%2]
			wg.Go(func() {
				codes[i], _, _ = httpCall(t, "POST", root+"/fhir/Patient", `{"resourceType":"Patient","identifier":[{"system":"urn:race","value":"r1"}]}`,
					"If-None-Exist: identifier=urn:race|r1")
			})
		}
		wg.Wait()
		created := 0
		for _, c := range codes {
			switch c {
			case http.StatusCreated:
				created++
			case http.StatusOK, http.StatusConflict, http.StatusPreconditionFailed:
			default:
				t.Errorf("conditional create answered %d", c)
			}
		}
		_, _, raw := httpCall(t, "GET", b+"/fhir/Patient?identifier=urn:race|r1&_total=accurate", "")
		var bundle struct {
			Total int `json:"total"`
		}
		if err := json.Unmarshal(raw, &bundle); err != nil {
			t.Fatal(err)
		}
		if created != 1 || bundle.Total != 1 {
			t.Fatalf("%d creates answered 201 (%v), %d resources stored; want exactly one", created, codes, bundle.Total)
		}
	})
}

// ownFerretDB starts an embedded FerretDB for one test or benchmark,
// stopped at its end, and returns its URI and a fresh database name
// (whatever ANODYNE_TEST_MONGODB_URI says, as mongotest.StartFerretDB).
func ownFerretDB(ctx context.Context, tb testing.TB) (uri, db string) {
	tb.Helper()
	srv, err := mongotest.StartFerretDB(ctx, tb.TempDir(), "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = srv.Stop() })
	return srv.URI, mongotest.Database(tb)
}
