package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
// stored exactly once even after a kill -9. AuditEvent searches see an
// event once it is materialized, normally within a fraction of a second.
//
// Journal files are journal-NNNNNNNN.log in the directory; a file is
// deleted once every event in it is stored. Each line is
// "CRC32C(hex, 8) SP JSON LF" (the AuditEvent resource, id and meta
// included); a torn last line (no LF, or a bad CRC) was never
// acknowledged and is cut off on open.
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
}

// position is a place in the journal: file number and byte offset.
type position struct {
	File   int   `json:"file"`
	Offset int64 `json:"offset"`
}

const (
	journalKey     = "audit/journal/position"
	journalBatch   = 500
	journalMaxFile = 64 << 20
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
	j.file = max(last, start.File)
	path := j.path(j.file)
	size, err := validPrefix(path)
	if err != nil {
		return nil, err
	}
	if j.f, err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o640); err != nil {
		return nil, fmt.Errorf("audit journal: %w", err)
	}
	// Cut a torn tail so that the next event starts on a line of its own.
	if err := j.f.Truncate(size); err != nil {
		j.f.Close()
		return nil, fmt.Errorf("audit journal: %w", err)
	}
	if _, err := j.f.Seek(size, io.SeekStart); err != nil {
		j.f.Close()
		return nil, fmt.Errorf("audit journal: %w", err)
	}
	j.durable = size
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

// validPrefix is the length of the longest prefix of the file made of
// whole, intact lines (0 for a missing file).
func validPrefix(path string) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("audit journal: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<16)
	var n int64
	for {
		line, err := r.ReadBytes('\n')
		if err != nil { // EOF: a last line without LF is torn
			return n, nil
		}
		if _, ok := decodeLine(line[:len(line)-1]); !ok {
			return n, nil
		}
		n += int64(len(line))
	}
}

// PrepareAudit returns the write of ev's AuditEvent: a write request
// commits its record with its data, not through the journal.
func (j *Journal) PrepareAudit(ev auth.AuditEvent) (storage.Write, error) {
	return prepare(j.index, ev)
}

// RecordAudit appends ev and returns once it is fsynced.
func (j *Journal) RecordAudit(ctx context.Context, ev auth.AuditEvent) error {
	res := ev.Resource()
	at := time.Now().UTC().Truncate(time.Millisecond)
	res["id"] = newID()
	res["meta"] = map[string]any{"versionId": "1", "lastUpdated": at.Format("2006-01-02T15:04:05.000Z07:00")}
	body, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("audit: encode: %w", err)
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
		select {
		case j.wake <- struct{}{}:
		default:
		}
	}
}

// append writes buf to the current file, fsyncs it, and starts a new file
// once the current one is full (only the flusher touches j.f).
func (j *Journal) append(buf []byte) error {
	if _, err := j.f.Write(buf); err != nil {
		return fmt.Errorf("audit journal: write: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("audit journal: fsync: %w", err)
	}
	j.mu.Lock()
	j.durable += int64(len(buf))
	full := j.durable >= j.maxFile
	j.mu.Unlock()
	if !full {
		return nil
	}
	next, err := os.OpenFile(j.path(j.file+1), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		j.log.Warn("audit journal: cannot start a new file; appending to the full one", "err", err)
		return nil
	}
	old := j.f
	j.mu.Lock()
	j.f, j.file, j.durable = next, j.file+1, 0
	j.mu.Unlock()
	if err := old.Close(); err != nil {
		j.log.Warn("audit journal: closing a full file", "err", err)
	}
	return nil
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
