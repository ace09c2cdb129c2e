package audit_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/auth/audit"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

func openStore(t testing.TB, dir string) (*sqlite.Backend, *resources.Registry) {
	t.Helper()
	be, err := sqlite.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := resources.Load(resources.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return be, reg
}

func journalFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "journal-*.log"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestJournal: concurrent events are acknowledged once fsynced, all
// become AuditEvent resources, exactly once across a reopen, and a read
// request's event is searchable like any other.
func TestJournal(t *testing.T) {
	dir := t.TempDir()
	be, reg := openStore(t, filepath.Join(dir, "db"))
	defer be.Close()
	jdir := filepath.Join(dir, "audit")
	j, err := audit.OpenJournal(t.Context(), jdir, be, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = j.RecordAudit(t.Context(), event(i))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := j.WaitStored(ctx); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		got := stored(t, be)
		if len(got) != n {
			t.Fatalf("%s: %d events stored, want %d", when, len(got), n)
		}
		for i := range n {
			if c := got[fmt.Sprintf("client-%d", i)]; c != 1 {
				t.Fatalf("%s: event %d stored %d times", when, i, c)
			}
		}
	}
	check("after WaitStored")
	// Searchable by its index entries, as the auth package's AuditEvent
	// searches expect.
	p, err := be.Search(t.Context(), storage.Query{Types: []string{"AuditEvent"}, Count: 0, Total: true,
		Filter: storage.Match{Param: "action", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "R"}}})
	if err != nil || p.Total != n {
		t.Fatalf("search action=R: total %d, %v", p.Total, err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.RecordAudit(t.Context(), event(0)); err == nil {
		t.Fatal("RecordAudit after Close succeeded")
	}
	j, err = audit.OpenJournal(t.Context(), jdir, be, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.WaitStored(ctx); err != nil {
		t.Fatal(err)
	}
	check("after reopening")
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestJournalFiles: with small files, events spread over several; each
// is deleted once stored, and every event is stored once.
func TestJournalFiles(t *testing.T) {
	dir := t.TempDir()
	be, reg := openStore(t, filepath.Join(dir, "db"))
	defer be.Close()
	jdir := filepath.Join(dir, "audit")
	j, err := audit.OpenJournal(t.Context(), jdir, be, reg, nil, audit.WithFileSize(4096))
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := range n {
		if err := j.RecordAudit(t.Context(), event(i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := j.WaitStored(ctx); err != nil {
		t.Fatal(err)
	}
	files := journalFiles(t, jdir)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	got := stored(t, be)
	for i := range n {
		if got[fmt.Sprintf("client-%d", i)] != 1 {
			t.Fatalf("stored %v", got)
		}
	}
	// 40 events of about 600 bytes in files of 4 KB: at least 6 files
	// were written; only the one being appended to is left.
	if len(files) != 1 {
		t.Errorf("journal files left after storing: %v, want only the current one", files)
	}
	if last := files[len(files)-1]; last <= filepath.Join(jdir, "journal-00000005.log") {
		t.Errorf("current file %s: the events did not spread over several files", last)
	}
}

// TestJournalTornTail: the lines of a journal that a crash left behind
// are stored on open, a torn or corrupt last line (never acknowledged)
// is cut off, and the next event starts on a clean line.
func TestJournalTornTail(t *testing.T) {
	for _, tail := range []string{
		`0badc0de {"resourceType":"AuditEvent","id":"torn"`, // no LF
		"00000000 {\"resourceType\":\"AuditEvent\",\"id\":\"bad-crc\"}\n",
		"garbage\n",
	} {
		t.Run(tail[:8], func(t *testing.T) {
			dir := t.TempDir()
			be, reg := openStore(t, filepath.Join(dir, "db"))
			defer be.Close()
			jdir := filepath.Join(dir, "audit")
			// A first run journals three events and dies before storing
			// them: record them with a store that fails every Commit.
			j, err := audit.OpenJournal(t.Context(), jdir, failingCommits{be}, reg, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if err := j.RecordAudit(t.Context(), event(i)); err != nil {
					t.Fatal(err)
				}
			}
			if len(stored(t, be)) != 0 {
				t.Fatal("stored through a failing backend")
			}
			_ = j.Close() // fails: nothing could be stored
			files := journalFiles(t, jdir)
			if len(files) != 1 {
				t.Fatalf("journal files %v", files)
			}
			// The torn write goes where the next group would have: after
			// the last event, over the preallocated zeros.
			raw, err := os.ReadFile(files[0])
			if err != nil {
				t.Fatal(err)
			}
			end := bytes.IndexByte(raw, 0)
			if end <= 0 || bytes.Count(raw[:end], []byte("\n")) != 3 {
				t.Fatalf("journal file: %d bytes of events before the zeros", end)
			}
			f, err := os.OpenFile(files[0], os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte(tail), int64(end)); err != nil {
				t.Fatal(err)
			}
			f.Close()

			j, err = audit.OpenJournal(t.Context(), jdir, be, reg, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := j.RecordAudit(t.Context(), event(3)); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if err := j.WaitStored(ctx); err != nil {
				t.Fatal(err)
			}
			got := stored(t, be)
			if len(got) != 4 {
				t.Fatalf("stored %v, want client-0..3", got)
			}
			for i := range 4 {
				if got[fmt.Sprintf("client-%d", i)] != 1 {
					t.Fatalf("stored %v, want client-0..3 once each", got)
				}
			}
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// failingCommits is the real backend whose KV commits fail (a database
// that went away), for journaling without storing.
type failingCommits struct{ *sqlite.Backend }

func (failingCommits) CommitWithKV(context.Context, []storage.KVPut, ...storage.Write) ([]storage.Record, error) {
	return nil, fmt.Errorf("database unavailable: %w", storage.ErrUnsupported)
}

// TestJournalKill9: a process journals events from 8 goroutines and prints
// each acknowledged one; it is killed with SIGKILL mid-stream. Every
// acknowledged event must be stored once the journal is opened again.
func TestJournalKill9(t *testing.T) {
	if dir := os.Getenv("ANODYNE_TEST_JOURNAL_CHILD"); dir != "" {
		journalChild(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestJournalKill9$")
	cmd.Env = append(os.Environ(), "ANODYNE_TEST_JOURNAL_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	sc := bufio.NewScanner(out)
	for sc.Scan() && len(acked) < 400 {
		if id, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
			acked[id] = true
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() { // acknowledgements printed before the kill landed
		if id, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
			acked[id] = true
		}
	}
	_ = cmd.Wait()
	if len(acked) < 400 {
		t.Fatalf("child acknowledged only %d events", len(acked))
	}
	be, reg := openStore(t, filepath.Join(dir, "db"))
	defer be.Close()
	j, err := audit.OpenJournal(t.Context(), filepath.Join(dir, "audit"), be, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := j.WaitStored(ctx); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for q := (storage.Query{Types: []string{"AuditEvent"}, Count: 1000}); ; {
		p, err := be.Search(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range p.Records {
			for id := range acked {
				if strings.Contains(string(r.JSON), `"`+id+`"`) {
					got[id]++
				}
			}
		}
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
	}
	for id := range acked {
		if got[id] != 1 {
			t.Errorf("acknowledged event %s stored %d times", id, got[id])
		}
	}
	t.Logf("%d acknowledged events before SIGKILL, all stored once", len(acked))
}

func journalChild(dir string) {
	be, err := sqlite.Open(context.Background(), filepath.Join(dir, "db"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	reg, err := resources.Load(resources.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	j, err := audit.OpenJournal(context.Background(), filepath.Join(dir, "audit"), be, reg, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	for g := range 8 {
		go func() {
			for i := 0; ; i++ {
				ev := event(0)
				ev.ClientID = fmt.Sprintf("k%d-%d", g, i)
				if err := j.RecordAudit(context.Background(), ev); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				mu.Lock()
				fmt.Fprintf(w, "ack %s\n", ev.ClientID)
				w.Flush()
				mu.Unlock()
			}
		}()
	}
	select {}
}
