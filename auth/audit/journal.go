package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Journal is an AuditSink that makes a read's AuditEvent durable in an
// append-only file of its own (group-committed: one fsync for every event
// that arrived while the previous one ran) and stores it as an AuditEvent
// resource afterwards, in large batches, off the request's path.
//
// Why: storing each read's AuditEvent as a resource on the request's path
// costs a database transaction with a dozen index rows per event, through
// the same single writer as the data, which capped reads at a fraction of
// their speed with audit off. The journal keeps the guarantee (RecordAudit
// returns only once the event is on disk) and moves the indexing to a
// materializer that commits hundreds of events per transaction.
//
// Nothing acknowledged is lost: the materializer stores each batch with
// its journal position (a KV put in the same Commit, storage.KVCommitter),
// and on start it resumes from that position, so every journaled event is
// stored exactly once even after a kill -9.
//
// Storing an event as a resource costs about as much CPU and database
// writer time as the read it records, so the materializer puts it off
// while reads keep coming: it stores when the server pauses (50 ms
// without an event), when the oldest event waits 5 s, when the backlog
// reaches 8 MB (about 8,000 events), when asked (WaitStored), and at
// Close. AuditEvent searches see an event once it is stored; serve makes
// a request that may return AuditEvents call WaitStored first, so an
// auditor never misses an acknowledged read (that request may wait for a
// backlog of up to 5 s of reads to be stored).
//
// Journal files are journal-NNNNNNNN.log in the directory, preallocated
// (zeros) so that a group needs a data sync only, a new one per run and
// per 16 MB; a file is deleted once every event in it is stored. Each
// line is "CRC32C(hex, 8) SP JSON LF" (the AuditEvent resource, id and
// meta included). A file ends at its first line that is not whole and
// intact: the zeros of the preallocation, or a torn write that was never
// acknowledged.
type Journal struct {
	dir     string
	backend storage.Backend
	kvc     storage.KVCommitter
	index   Indexer
	log     *slog.Logger
	maxFile int64
	onBatch func(events int)

	mu      sync.Mutex
	cond    *sync.Cond // signals the flusher: pending or closing
	pending []byte
	waiters []chan error
	closed  bool

	// Written by the flusher, read by the materializer (under mu).
	file     int   // number of the file being appended to
	durable  int64 // bytes of it that are fsynced
	f        *os.File
	wake     chan struct{}
	flushed  chan struct{}
	matDone  chan struct{}
	stopMat  chan struct{}
	matErr   error
	storedAt position // the materializer's position (for Sync)
	// lastAppend is when the flusher last made events durable; oldest
	// when the oldest durable event not yet stored was (zero: none).
	lastAppend, oldest time.Time
	directOff          atomic.Bool // logged that direct entries were refused
}

// position is a place in the journal: file number and byte offset.
type position struct {
	File   int   `json:"file"`
	Offset int64 `json:"offset"`
}

const (
	journalKey     = "audit/journal/position"
	journalBatch   = 500
	journalMaxFile = 16 << 20
	// When the materializer stores (materialize): storing costs the
	// database writer and the CPU about as much per event as the read
	// it records, so it is put off while reads keep coming and done in
	// large Commits when the server has a pause (no event for idleGap),
	// when the backlog reaches maxBacklog bytes, when the oldest event
	// not stored is maxDelay old, when a request that may return
	// AuditEvents asks (WaitStored), and at Close. checkEvery is how
	// often it looks.
	checkEvery = 20 * time.Millisecond
	idleGap    = 50 * time.Millisecond
	maxDelay   = 5 * time.Second
	maxBacklog = 8 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var _ auth.AuditPreparer = (*Journal)(nil)

// OpenJournal opens (or creates) the journal in dir, cuts off a torn
// tail, and starts its flusher and its materializer, which first stores
// whatever an earlier run journaled but did not store. The backend must
// implement storage.KVCommitter.
func OpenJournal(ctx context.Context, dir string, backend storage.Backend, index Indexer, log *slog.Logger, opts ...JournalOption) (*Journal, error) {
	kvc, ok := storage.As[storage.KVCommitter](backend)
	if !ok {
		return nil, errors.New("audit journal: the backend cannot commit KV records with writes")
	}
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("audit journal: %w", err)
	}
	j := &Journal{dir: dir, backend: backend, kvc: kvc, index: index, log: log, maxFile: journalMaxFile,
		wake: make(chan struct{}, 1), flushed: make(chan struct{}), matDone: make(chan struct{}), stopMat: make(chan struct{})}
	j.cond = sync.NewCond(&j.mu)
	for _, o := range opts {
		o(j)
	}
	start, err := j.loadPosition(ctx)
	if err != nil {
		return nil, err
	}
	last, err := lastFile(dir)
	if err != nil {
		return nil, err
	}
	// A new file for every run: an earlier run's last file may end in a
	// torn write, which readers treat as its end; it is never appended to.
	j.file = max(last, start.File) + 1
	if j.f, err = createJournalFile(j.path(j.file), j.dir, j.maxFile); err != nil {
		return nil, err
	}
	j.durable = 0
	j.storedAt = start
	go j.flushLoop()
	go j.materialize(start)
	return j, nil
}

// JournalOption tunes a Journal.
type JournalOption func(*Journal)

// WithFsyncObserver is told the number of events of every fsync group
// (for the batch-size metric); it runs on the flusher goroutine.
func WithFsyncObserver(f func(events int)) JournalOption {
	return func(j *Journal) { j.onBatch = f }
}

// WithFileSize sets the preallocated size of each journal file (default
// 16 MB); a group that does not fit starts the next file.
func WithFileSize(n int64) JournalOption {
	return func(j *Journal) {
		if n > 0 {
			j.maxFile = n
		}
	}
}

// QueueLen is the number of events waiting for their fsync.
func (j *Journal) QueueLen() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.waiters)
}

func (j *Journal) path(n int) string { return filepath.Join(j.dir, fmt.Sprintf("journal-%08d.log", n)) }

func (j *Journal) loadPosition(ctx context.Context) (position, error) {
	raw, err := j.backend.KV().Get(ctx, journalKey)
	if errors.Is(err, storage.ErrNotFound) {
		return position{}, nil
	}
	if err != nil {
		return position{}, fmt.Errorf("audit journal: reading the stored position: %w", err)
	}
	var p position
	if err := json.Unmarshal(raw, &p); err != nil {
		return position{}, fmt.Errorf("audit journal: stored position %q: %w", raw, err)
	}
	return p, nil
}

// lastFile is the highest journal file number in dir (0 when none).
func lastFile(dir string) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("audit journal: %w", err)
	}
	last := 0
	for _, e := range ents {
		s, ok := strings.CutPrefix(e.Name(), "journal-")
		if s, ok2 := strings.CutSuffix(s, ".log"); ok && ok2 {
			if n, err := strconv.Atoi(s); err == nil && n > last {
				last = n
			}
		}
	}
	return last, nil
}

// encodeLine is the pinned on-disk form of one event.
func encodeLine(body []byte) []byte {
	line := make([]byte, 0, len(body)+10)
	line = fmt.Appendf(line, "%08x ", crc32.Checksum(body, castagnoli))
	line = append(line, body...)
	return append(line, '\n')
}

// decodeLine returns the JSON of one line (without its LF), or false for
// a line that is torn or corrupt.
func decodeLine(line []byte) ([]byte, bool) {
	if len(line) < 10 || line[8] != ' ' {
		return nil, false
	}
	sum, err := strconv.ParseUint(string(line[:8]), 16, 32)
	if err != nil {
		return nil, false
	}
	body := line[9:]
	return body, crc32.Checksum(body, castagnoli) == uint32(sum)
}

// PrepareAudit returns the write of ev's AuditEvent: a write request
// commits its record with its data, not through the journal.
func (j *Journal) PrepareAudit(ev auth.AuditEvent) (storage.Write, error) {
	return prepare(j.index, ev)
}

// RecordAudit appends ev and returns once it is fsynced.
func (j *Journal) RecordAudit(ctx context.Context, ev auth.AuditEvent) error {
	body, err := encodeEvent(ev, newID(), time.Now())
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return ErrClosed
	}
	j.pending = append(j.pending, encodeLine(body)...)
	j.waiters = append(j.waiters, done)
	j.cond.Signal()
	j.mu.Unlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("audit: waiting for the journal: %w", ctx.Err())
	}
}

// encodeEvent is the JSON of ev's AuditEvent resource with its id and
// meta, as journaled.
func encodeEvent(ev auth.AuditEvent, id string, now time.Time) ([]byte, error) {
	res := ev.Resource()
	res["id"] = id
	res["meta"] = map[string]any{"versionId": "1", "lastUpdated": now.UTC().Truncate(time.Millisecond).Format("2006-01-02T15:04:05.000Z07:00")}
	body, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("audit: encode: %w", err)
	}
	return body, nil
}

// flushLoop writes and fsyncs whatever is pending, one group at a time.
func (j *Journal) flushLoop() {
	defer close(j.flushed)
	for {
		j.mu.Lock()
		for len(j.pending) == 0 && !j.closed {
			j.cond.Wait()
		}
		if len(j.pending) == 0 && j.closed {
			j.mu.Unlock()
			return
		}
		buf, waiters := j.pending, j.waiters
		j.pending, j.waiters = nil, nil
		j.mu.Unlock()

		if j.onBatch != nil {
			j.onBatch(len(waiters))
		}
		err := j.append(buf)
		for _, w := range waiters {
			w <- err
		}
		// The materializer looks on its own tick (materialize); only a
		// backlog that must not grow further wakes it.
		j.mu.Lock()
		now := time.Now()
		j.lastAppend = now
		if j.oldest.IsZero() {
			j.oldest = now
		}
		backlog := j.file != j.storedAt.File || j.durable-j.storedAt.Offset >= maxBacklog
		j.mu.Unlock()
		if backlog {
			select {
			case j.wake <- struct{}{}:
			default:
			}
		}
	}
}

// append writes buf to the current file and makes it durable, starting a
// new file first when buf would not fit in the preallocated space (only
// the flusher touches j.f).
func (j *Journal) append(buf []byte) error {
	j.mu.Lock()
	full := j.durable > 0 && j.durable+int64(len(buf)) > j.maxFile
	j.mu.Unlock()
	if full {
		if next, err := createJournalFile(j.path(j.file+1), j.dir, j.maxFile); err != nil {
			j.log.Warn("audit journal: cannot start a new file; appending to the full one", "err", err)
		} else {
			old := j.f
			j.mu.Lock()
			j.f, j.file, j.durable = next, j.file+1, 0
			j.mu.Unlock()
			if err := old.Close(); err != nil {
				j.log.Warn("audit journal: closing a full file", "err", err)
			}
		}
	}
	if _, err := j.f.Write(buf); err != nil {
		return fmt.Errorf("audit journal: write: %w", err)
	}
	if err := datasync(j.f); err != nil {
		return fmt.Errorf("audit journal: fsync: %w", err)
	}
	j.mu.Lock()
	j.durable += int64(len(buf))
	j.mu.Unlock()
	return nil
}

// createJournalFile creates a file with size bytes preallocated (zeros),
// durable with its directory entry before any event goes in: appends
// then change no file size, and each group needs only a data sync.
func createJournalFile(path, dir string, size int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, fmt.Errorf("audit journal: %w", err)
	}
	if err := preallocate(f, size); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit journal: preallocating %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit journal: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("audit journal: syncing %s: %w", dir, err)
		}
	}
	return f, nil
}

// Close stops taking events, fsyncs what is pending, stores every
// journaled event and stops.
func (j *Journal) Close() error {
	j.mu.Lock()
	already := j.closed
	j.closed = true
	j.cond.Broadcast()
	j.mu.Unlock()
	if already {
		<-j.matDone
		return j.matErr
	}
	<-j.flushed
	close(j.stopMat)
	<-j.matDone
	ferr := j.f.Close()
	if j.matErr != nil {
		return j.matErr
	}
	if ferr != nil {
		return fmt.Errorf("audit journal: %w", ferr)
	}
	return nil
}
