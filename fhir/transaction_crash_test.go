//go:build unix

package fhir_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// The crash test runs this test binary as a child process that serves a
// real SQLite database, posts a large transaction and is SIGKILLed while
// the database commits it. The parent then reopens the same directory and
// checks that the transaction is entirely there or entirely absent.

const (
	crashDirEnv  = "ANODYNE_TX_CRASH_DIR"
	crashFracEnv = "ANODYNE_TX_CRASH_FRACTION"
	crashSize    = 600
)

// killingBackend is the real backend with a test hook: during a
// multi-write Commit it SIGKILLs its own process after a delay (a fraction
// of how long the previous such Commit took), so the kill lands inside
// the database's commit.
type killingBackend struct {
	storage.Backend
	frac float64
	last atomic.Int64 // duration of the previous multi-write Commit, ns
}

func (k *killingBackend) Capabilities(ctx context.Context) storage.Capabilities {
	return k.Backend.(storage.Describer).Capabilities(ctx)
}

func (k *killingBackend) Commit(ctx context.Context, writes ...storage.Write) ([]storage.Record, error) {
	if len(writes) > 1 && k.last.Load() > 0 {
		delay := time.Duration(k.frac * float64(k.last.Load()))
		time.AfterFunc(delay, func() { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL) })
	}
	start := time.Now()
	recs, err := k.Backend.Commit(ctx, writes...)
	if len(writes) > 1 {
		k.last.Store(int64(time.Since(start)))
	}
	return recs, err
}

func crashBundle(family string) string {
	var es []string
	for i := range crashSize {
		es = append(es, postEntry(fmt.Sprintf("urn:uuid:00000000-0000-4000-8000-%012d", i),
			`{"resourceType":"Patient","name":[{"family":"`+family+`","given":["P`+strconv.Itoa(i)+`"]}]}`))
	}
	return bundleJSON("transaction", es...)
}

// TestTransactionCrashChild is the child process; it does nothing in a
// normal test run.
func TestTransactionCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("only runs as the child of TestTransactionCrash")
	}
	frac, err := strconv.ParseFloat(os.Getenv(crashFracEnv), 64)
	if err != nil {
		t.Fatal(err)
	}
	b, err := sqliteOpen(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := newServer(t, &killingBackend{Backend: b, frac: frac}, nil)
	// The first transaction arms the hook with a measured commit time.
	c.do("POST", "", crashBundle("CrashA")).expect(t, http.StatusOK)
	c.do("POST", "", crashBundle("CrashB")).expect(t, http.StatusOK)
	fmt.Println("SURVIVED")
}

func TestTransactionCrash(t *testing.T) {
	if os.Getenv(crashDirEnv) != "" {
		t.Skip("child")
	}
	if testing.Short() {
		t.Skip("spawns processes")
	}
	outcomes := map[string]int{}
	for _, frac := range []float64{0, 0.2, 0.4, 0.6, 0.8, 0.95, 3} {
		t.Run(fmt.Sprint(frac), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestTransactionCrashChild$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashFracEnv+"="+fmt.Sprint(frac))
			out, err := cmd.CombinedOutput()
			survived := strings.Contains(string(out), "SURVIVED")
			var ee *exec.ExitError
			killed := err != nil && errors.As(err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
			if !survived && !killed {
				t.Fatalf("child neither survived nor was killed: %v\n%s", err, out)
			}

			b, err := sqliteOpen(dir)
			if err != nil {
				t.Fatalf("reopening after the crash: %v", err)
			}
			t.Cleanup(func() { b.Close() })
			c := newServer(t, b, nil)
			if n := countFamily(t, c, "CrashA"); n != crashSize {
				t.Fatalf("the committed transaction has %d of %d resources after restart", n, crashSize)
			}
			n := countFamily(t, c, "CrashB")
			switch {
			case n == 0:
				outcomes["none"]++
			case n == crashSize:
				outcomes["all"]++
			default:
				t.Fatalf("killed transaction left %d of %d resources", n, crashSize)
			}
			if survived && n != crashSize {
				t.Fatalf("the child saw its transaction succeed but %d of %d resources are stored", n, crashSize)
			}
			// The history agrees with the resources: no version without its resource.
			got := 0
			for next := "/Patient/_history?_count=1000"; next != ""; {
				h := c.do("GET", next, "").expect(t, http.StatusOK).json(t)
				got += len(entries(h))
				next = nextLink(h)
			}
			if got != crashSize+n {
				t.Fatalf("history holds %d versions, want %d", got, crashSize+n)
			}
			t.Logf("fraction %v: killed=%v, transaction %s", frac, killed, map[bool]string{true: "all", false: "none"}[n == crashSize])
		})
	}
	t.Logf("outcomes: %v", outcomes)
}
