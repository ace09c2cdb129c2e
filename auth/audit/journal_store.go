package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// materialize stores journaled events as AuditEvent resources, from pos
// on, when due (see due), or at once when woken (a backlog at its bound,
// WaitStored), until Close; then it stores what is left and returns.
func (j *Journal) materialize(pos position) {
	defer close(j.matDone)
	tick := time.NewTicker(checkEvery)
	defer tick.Stop()
	for {
		stopping := false
		select {
		case <-j.wake:
		case <-tick.C:
			if !j.due(time.Now()) {
				continue
			}
		case <-j.stopMat:
			stopping = true
		}
		for {
			next, progressed, err := j.storeBatch(pos)
			if err != nil {
				if stopping {
					j.matErr = err
					return
				}
				// The events stay in the journal; the next round retries.
				j.log.Warn("audit journal: storing AuditEvents failed; will retry", "err", err)
				break
			}
			pos = next
			j.mu.Lock()
			j.storedAt = pos
			caughtUp := pos == position{File: j.file, Offset: j.durable}
			if caughtUp {
				j.oldest = time.Time{}
			}
			j.mu.Unlock()
			if !progressed {
				break
			}
		}
		if stopping {
			return
		}
	}
}

func (j *Journal) due(now time.Time) bool {
	j.mu.Lock()
	b := backlog{stored: j.storedAt, end: position{File: j.file, Offset: j.durable}, lastAppend: j.lastAppend, oldest: j.oldest}
	j.mu.Unlock()
	return b.due(now)
}

// backlog is what the materializer knows of the events not yet stored.
type backlog struct {
	stored, end        position  // the materializer's position, the end of the durable events
	lastAppend, oldest time.Time // the flusher's last append, the oldest unstored event's
}

// due reports whether the events not yet stored should be stored now: the
// server paused (no event for idleGap), the oldest waits maxDelay, or the
// backlog reached maxBacklog bytes or a finished file.
func (b backlog) due(now time.Time) bool {
	switch {
	case b.stored == b.end:
		return false
	case b.stored.File != b.end.File, b.end.Offset-b.stored.Offset >= maxBacklog:
		return true
	}
	return now.Sub(b.lastAppend) >= idleGap || !b.oldest.IsZero() && now.Sub(b.oldest) >= maxDelay
}

// storeBatch stores up to journalBatch events after pos with the position
// after them in the same Commit, and moves past a finished file. It
// reports whether it made progress.
func (j *Journal) storeBatch(pos position) (position, bool, error) {
	j.mu.Lock()
	cur, durable := j.file, j.durable
	j.mu.Unlock()
	end := durable
	if pos.File < cur {
		end = -1 // a finished file: read it to its end
	}
	bodies, next, err := readLines(j.path(pos.File), pos.Offset, end, journalBatch)
	if err != nil {
		return pos, false, err
	}
	np := position{File: pos.File, Offset: next}
	if len(bodies) == 0 && pos.File < cur {
		np = position{File: pos.File + 1}
	} else if len(bodies) == 0 && next == pos.Offset {
		return pos, false, nil
	}
	writes := make([]storage.Write, 0, len(bodies))
	direct := len(bodies) > 0 && j.directAgrees(bodies[0])
	for _, b := range bodies {
		w, err := writeOfBody(j.index, b, direct)
		if err != nil {
			// Written by this package: only a bug gets here. Keeping the
			// line would block every later event.
			j.log.Error("audit journal: unreadable event skipped", "err", err, "file", j.path(pos.File))
			continue
		}
		writes = append(writes, w)
	}
	raw, _ := json.Marshal(np)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := j.kvc.CommitWithKV(ctx, []storage.KVPut{{Key: journalKey, Value: raw}}, writes...); err != nil {
		return pos, false, fmt.Errorf("audit journal: storing %d AuditEvents: %w", len(writes), err)
	}
	if np.File != pos.File {
		if err := os.Remove(j.path(pos.File)); err != nil && !errors.Is(err, os.ErrNotExist) {
			j.log.Warn("audit journal: removing a stored file", "err", err)
		}
	}
	return np, true, nil
}

// writeOfBody is the write of one journaled AuditEvent resource, indexed
// directly (directEntries) when direct is set and the body allows it, by
// the registry otherwise.
func writeOfBody(index Indexer, body []byte, direct bool) (storage.Write, error) {
	var head struct {
		ID   string `json:"id"`
		Meta struct {
			LastUpdated time.Time `json:"lastUpdated"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(body, &head); err != nil || head.ID == "" {
		return storage.Write{}, fmt.Errorf("audit journal: event without id: %v", err)
	}
	at := head.Meta.LastUpdated.UTC()
	if direct {
		if entries, ok := directEntries(body); ok {
			return storage.Write{
				Record: storage.Record{Type: "AuditEvent", ID: head.ID, VersionID: 1, LastUpdated: at, Method: http.MethodPost, JSON: body},
				Index:  entries,
			}, nil
		}
	}
	return writeOf(index, head.ID, at, body)
}

// directAgrees reports whether the direct entries of body are the
// registry's: checked on the first event of every batch, since the
// registry's AuditEvent parameters can change (a SearchParameter
// resource) while the direct ones cannot.
func (j *Journal) directAgrees(body []byte) bool {
	got, ok := directEntries(body)
	if !ok {
		return true // the registry indexes this one anyway; the next bodies decide alone
	}
	want, err := writeOf(j.index, "x", time.Time{}, body)
	if err != nil {
		return false
	}
	if !sameEntries(got, want.Index) {
		if !j.directOff.Swap(true) {
			j.log.Warn("audit journal: the search parameters of AuditEvent differ from R4's; events are indexed with the registry")
		}
		return false
	}
	return true
}

// readLines returns the JSON of at most max lines of the file from
// offset, not reading past end (-1: to the end of the file's events),
// and the offset after them. The events end at the first line that is
// not whole and intact (preallocated zeros, a torn write). A missing file
// is empty.
func readLines(path string, offset, end int64, max int) ([][]byte, int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, offset, nil
	}
	if err != nil {
		return nil, offset, fmt.Errorf("audit journal: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, offset, fmt.Errorf("audit journal: %w", err)
	}
	var rd io.Reader = f
	if end >= 0 {
		rd = io.LimitReader(f, end-offset)
	}
	r := bufio.NewReaderSize(rd, 1<<16)
	var out [][]byte
	for len(out) < max {
		if b, err := r.Peek(1); err != nil || b[0] == 0 {
			break // the end of the events
		}
		line, err := readLine(r)
		if err != nil {
			break
		}
		body, ok := decodeLine(line[:len(line)-1])
		if !ok {
			break
		}
		out = append(out, body)
		offset += int64(len(line))
	}
	return out, offset, nil
}

// maxLine bounds one event's line, so that a torn file cannot make a
// reader swallow megabytes looking for a line end.
const maxLine = 1 << 20

// readLine reads one LF-terminated line of at most maxLine bytes.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if err == nil {
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) || len(line) > maxLine {
			return nil, io.ErrUnexpectedEOF
		}
	}
}

// WaitStored waits until every event acknowledged so far is stored as a
// resource (for tests and for an operator's consistent read).
func (j *Journal) WaitStored(ctx context.Context) error {
	for {
		j.mu.Lock()
		done := len(j.pending) == 0 && j.storedAt == position{File: j.file, Offset: j.durable}
		j.mu.Unlock()
		if done {
			return nil
		}
		select {
		case j.wake <- struct{}{}:
		default:
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("audit journal: waiting for the store: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
