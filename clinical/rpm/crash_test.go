package rpm

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/mongo"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// crashChildEnv, when set, makes the test binary a server process for the
// crash test: "sqlite <dir>" or "mongo <uri> <database>".
const crashChildEnv = "ANODYNE_RPM_CRASH_CHILD"

// crashChild serves the FHIR API with the RPM observer until killed,
// printing its address on stdout.
func crashChild() {
	f := strings.Fields(os.Getenv(crashChildEnv))
	ctx := context.Background()
	var b storage.Backend
	var err error
	switch {
	case len(f) == 2 && f[0] == "sqlite":
		b, err = sqlite.Open(ctx, f[1])
	case len(f) == 3 && f[0] == "mongo":
		b, err = mongo.Open(ctx, f[1], f[2])
	default:
		err = fmt.Errorf("bad %s %q", crashChildEnv, f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	obs, err := NewDefaultObserver(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	srv, err := fhir.New(fhir.Config{BaseURL: "http://" + ln.Addr().String(), Backend: b,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)), Observers: []fhir.CommitObserver{obs}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Printf("ADDR %s\n", ln.Addr())
	_ = http.Serve(ln, srv.Handler())
	os.Exit(3)
}

// TestCrashKeepsDerivedAlerts kills a server process with SIGKILL while it
// ingests readings, restarts on the same store, and checks that every
// acknowledged reading has its interpretation and that each Flag and
// DetectedIssue is what the rule gives for the readings stored.
func TestCrashKeepsDerivedAlerts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	th := defaults(t)
	for _, be := range []string{"sqlite", "mongo"} {
		t.Run(be, func(t *testing.T) {
			var env string
			var reopen func() storage.Backend
			if be == "sqlite" {
				dir := t.TempDir()
				env = "sqlite " + dir
				reopen = func() storage.Backend {
					b, err := sqlite.Open(context.Background(), dir)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { b.Close() })
					return b
				}
			} else {
				srv := fhirEnv.Mongo(t)
				db := fmt.Sprintf("crash_%d", time.Now().UnixNano())
				env = "mongo " + srv.URI + " " + db
				reopen = func() storage.Backend {
					b, err := mongo.Open(context.Background(), srv.URI, db)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { b.Close() })
					return b
				}
			}
			acked := ingestUntilKilled(t, env, map[string]int{"sqlite": 40, "mongo": 24}[be])
			c := startServer(t, reopen(), NewObserver(th, nil))
			for _, id := range acked {
				res := c.do("GET", "/Observation/"+id, "", 200)
				if interpOf(res) == "" {
					t.Errorf("acknowledged Observation/%s has no interpretation after the crash", id)
				}
			}
			for _, p := range []string{"k1", "k2"} {
				checkAlerts(t, c, th, "p-"+p, "spo2")
			}
			t.Logf("%d readings acknowledged before SIGKILL", len(acked))
		})
	}
}

// ingestUntilKilled starts the child, posts SpO2 readings for two
// patients (a pattern of breaches and recoveries), and kills the child
// with SIGKILL while reading n+1 is in flight. It returns the ids of the
// acknowledged readings.
func ingestUntilKilled(t *testing.T, env string, n int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+env)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "ADDR "))
	pattern := []float64{96, 93, 91, 90, 97, 98, 94, 89}
	post := func(i int) (string, error) {
		p := []string{"p-k1", "p-k2"}[i%2]
		body := obsJSON("", p, "2708-6", float64(i), pattern[(i/2)%len(pattern)], "%")
		res, err := http.Post("http://"+addr+"/fhir/Observation", "application/fhir+json", strings.NewReader(body))
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		if res.StatusCode != 201 {
			raw, _ := io.ReadAll(res.Body)
			return "", fmt.Errorf("status %d: %s", res.StatusCode, raw)
		}
		var r struct{ ID string }
		if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
			return "", err
		}
		return r.ID, nil
	}
	var acked []string
	for i := range n {
		id, err := post(i)
		if err != nil {
			t.Fatalf("reading %d: %v", i, err)
		}
		acked = append(acked, id)
	}
	// Reading n is in flight (or just committed) when the process dies;
	// it was never acknowledged, so either outcome is allowed.
	done := make(chan struct{})
	go func() {
		defer close(done)
		if id, err := post(n); err == nil {
			acked = append(acked, id) // acknowledged before the kill landed
		}
	}()
	time.Sleep(time.Duration(200+time.Now().UnixNano()%800) * time.Microsecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-done
	return acked
}
