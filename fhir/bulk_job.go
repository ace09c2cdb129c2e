package fhir

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Bulk Data export jobs (hl7.org/fhir/uv/bulkdata/export.html). A job is a
// KV record (bulkJobPrefix + id) and a directory of NDJSON files under
// Config.ExportDir. The record is the source of truth: a server that
// starts finds the unfinished jobs there and runs them again from their
// last finished query group, so a restart loses at most one group's work.
//
// Exactly one worker per store should run jobs (ExportWorkers < 0 on the
// other replicas): there is no lease between processes.

const (
	bulkJobPrefix = "bulk/export/job/"
	// exportPageSize is how many resources one storage query returns; the
	// worker yields between pages so interactive requests keep their share.
	exportPageSize = 500
	// exportSaveEvery bounds how often progress is written to the KV.
	exportSaveEvery = time.Second
	// exportRescan is how often an idle worker looks for jobs queued by
	// other replicas sharing the store.
	exportRescan = 10 * time.Second
	// exportRetention is how long finished jobs and their files are kept
	// when the client does not DELETE them (the manifest's Expires).
	exportRetention = 24 * time.Hour
)

// Job states.
const (
	jobQueued  = "queued"
	jobRunning = "running"
	jobDone    = "done"
	jobFailed  = "failed"
)

// exportJob is the persisted state of one export.
type exportJob struct {
	ID string `json:"id"`
	// Owner names the requester (Requester.Requester); only the owner may
	// poll, download or cancel. Empty when authorization is off.
	Owner               string    `json:"owner"`
	RequiresAccessToken bool      `json:"requiresAccessToken"`
	Request             string    `json:"request"`
	TransactionTime     time.Time `json:"transactionTime"`
	Created             time.Time `json:"created"`
	Status              string    `json:"status"`
	// Groups are the storage queries to run, in order; Next is the first
	// one not finished (the checkpoint).
	Groups []exportGroup `json:"groups"`
	Next   int           `json:"next"`
	// Output lists the finished files.
	Output []exportOutput `json:"output"`
	// Exported counts resources written, including the group in progress
	// (for X-Progress).
	Exported int64  `json:"exported"`
	Failure  string `json:"failure,omitempty"`
	// View names the output view of the caller who asked (OutputFilter.Named),
	// so that files written later are shaped for that caller.
	View string `json:"view,omitempty"`
	// Finished is when the job reached done or failed (for retention).
	Finished time.Time `json:"finished,omitzero"`
}

// exportGroup is one storage query: types that share the same filter.
type exportGroup struct {
	Types  []string        `json:"types"`
	Filter json.RawMessage `json:"filter,omitempty"`
}

type exportOutput struct {
	Type  string `json:"type"`
	File  string `json:"file"`
	Count int64  `json:"count"`
}

// bulkRunner runs export jobs in the background with bounded concurrency.
type bulkRunner struct {
	s       *Server
	dir     string
	workers int
	log     *slog.Logger
	wake    chan struct{}
	stop    context.CancelFunc
	done    sync.WaitGroup

	// direct runs one job in the caller's goroutine (Export): files go
	// straight into dir and nothing is recorded in the KV.
	direct bool

	mu        sync.Mutex
	running   map[string]context.CancelFunc // jobs in progress in this process
	cancelled map[string]bool               // cancelled while running: never save them again
}

// newBulkRunner starts workers goroutines (none when workers < 0).
func newBulkRunner(s *Server, dir string, workers int) *bulkRunner {
	ctx, stop := context.WithCancel(context.Background())
	r := &bulkRunner{
		s: s, dir: dir, workers: workers, log: s.log,
		wake: make(chan struct{}, 1), stop: stop,
		running: map[string]context.CancelFunc{}, cancelled: map[string]bool{},
	}
	for range max(workers, 0) {
		r.done.Add(1)
		go r.work(ctx)
	}
	r.poke()
	return r
}

// close stops the workers and waits for them. A job interrupted here
// stays "running" in the store and is picked up again at the next start.
func (r *bulkRunner) close() {
	r.stop()
	r.done.Wait()
}

func (r *bulkRunner) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *bulkRunner) work(ctx context.Context) {
	defer r.done.Done()
	t := time.NewTicker(exportRescan)
	defer t.Stop()
	for {
		for {
			job, ok, err := r.claim(ctx)
			if err != nil {
				if ctx.Err() == nil {
					r.log.ErrorContext(ctx, "bulk export: looking for jobs", "err", err)
				}
				break
			}
			if !ok {
				break
			}
			r.run(ctx, job)
			if ctx.Err() != nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-t.C:
		}
	}
}

// claim picks the oldest unfinished job not already running here.
func (r *bulkRunner) claim(ctx context.Context) (exportJob, bool, error) {
	kv := r.s.backend.KV()
	keys, err := kv.List(ctx, bulkJobPrefix)
	if err != nil {
		return exportJob{}, false, fmt.Errorf("listing export jobs: %w", err)
	}
	var pending []exportJob
	for _, k := range keys {
		job, err := r.load(ctx, strings.TrimPrefix(k, bulkJobPrefix))
		if errors.Is(err, storage.ErrNotFound) {
			continue // cancelled meanwhile
		}
		if err != nil {
			return exportJob{}, false, err
		}
		switch job.Status {
		case jobQueued, jobRunning:
			pending = append(pending, job)
		case jobDone, jobFailed:
			if !job.Finished.IsZero() && time.Since(job.Finished) > exportRetention {
				if err := r.cancel(ctx, job.ID); err != nil {
					r.log.WarnContext(ctx, "bulk export: removing an expired job", "job", job.ID, "err", err)
				}
			}
		}
	}
	sort.Slice(pending, func(i, j int) bool { return pending[i].Created.Before(pending[j].Created) })
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, job := range pending {
		if _, busy := r.running[job.ID]; !busy && !r.cancelled[job.ID] {
			r.running[job.ID] = nil // reserved; run sets the cancel func
			return job, true, nil
		}
	}
	return exportJob{}, false, nil
}

func (r *bulkRunner) load(ctx context.Context, id string) (exportJob, error) {
	raw, err := r.s.backend.KV().Get(ctx, bulkJobPrefix+id)
	if err != nil {
		return exportJob{}, fmt.Errorf("reading export job %s: %w", id, err)
	}
	var job exportJob
	if err := json.Unmarshal(raw, &job); err != nil {
		return exportJob{}, fmt.Errorf("decoding export job %s: %w", id, err)
	}
	return job, nil
}

// save persists job unless it was cancelled in this process, so that a
// worker finishing a page cannot resurrect a job the client deleted.
func (r *bulkRunner) save(ctx context.Context, job exportJob) error {
	if r.direct {
		return nil
	}
	raw, err := json.Marshal(job)
	if err != nil {
		return fmt.Errorf("encoding export job %s: %w", job.ID, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancelled[job.ID] {
		return context.Canceled
	}
	if err := r.s.backend.KV().Put(ctx, bulkJobPrefix+job.ID, raw, 0); err != nil {
		return fmt.Errorf("saving export job %s: %w", job.ID, err)
	}
	return nil
}

// cancel deletes a job and its files; a running job is stopped first.
func (r *bulkRunner) cancel(ctx context.Context, id string) error {
	r.mu.Lock()
	if stop, ok := r.running[id]; ok {
		r.cancelled[id] = true
		if stop != nil {
			stop()
		}
	}
	err := r.s.backend.KV().Delete(ctx, bulkJobPrefix+id)
	r.mu.Unlock()
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("deleting export job %s: %w", id, err)
	}
	r.s.jobEvent("export", "deleted")
	if err := os.RemoveAll(r.jobDir(id)); err != nil {
		return fmt.Errorf("removing export files of job %s: %w", id, err)
	}
	return nil
}

func (r *bulkRunner) jobDir(id string) string {
	if r.direct {
		return r.dir
	}
	return filepath.Join(r.dir, id)
}

// run executes job from its checkpoint and records the outcome.
func (r *bulkRunner) run(parent context.Context, job exportJob) {
	ctx, stop := context.WithCancel(parent)
	r.mu.Lock()
	r.running[job.ID] = stop
	cancelled := r.cancelled[job.ID]
	r.mu.Unlock()
	defer func() {
		stop()
		r.mu.Lock()
		delete(r.running, job.ID)
		delete(r.cancelled, job.ID)
		r.mu.Unlock()
	}()
	if cancelled {
		return // deleted by the client between claim and start
	}
	start := time.Now()
	err := r.execute(ctx, &job)
	switch {
	case err == nil:
		r.s.jobEvent("export", "completed")
		r.log.InfoContext(ctx, "bulk export finished", "job", job.ID, "resources", job.Exported, "duration_ms", time.Since(start).Milliseconds())
	case ctx.Err() != nil:
		// Cancelled by the client or stopped by shutdown: the record (if
		// any) keeps its checkpoint for the next start.
		r.log.InfoContext(parent, "bulk export interrupted", "job", job.ID, "err", err)
	default:
		r.log.ErrorContext(ctx, "bulk export failed", "job", job.ID, "err", err)
		r.s.jobEvent("export", "failed")
		job.Status, job.Failure, job.Finished = jobFailed, err.Error(), time.Now().UTC()
		if serr := r.save(ctx, job); serr != nil && !errors.Is(serr, context.Canceled) {
			r.log.ErrorContext(ctx, "bulk export: recording failure", "job", job.ID, "err", serr)
		}
	}
}

func (r *bulkRunner) execute(ctx context.Context, job *exportJob) error {
	job.Status = jobRunning
	// Resuming: the group at the checkpoint may have been half written.
	// Its files are rewritten from scratch; the finished ones are kept.
	job.Exported = 0
	for _, o := range job.Output {
		job.Exported += o.Count
	}
	if err := r.save(ctx, *job); err != nil {
		return err
	}
	dir := r.jobDir(job.ID)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("creating export directory: %w", err)
	}
	for job.Next < len(job.Groups) {
		outs, err := r.runGroup(ctx, job, dir, job.Groups[job.Next])
		if err != nil {
			return err
		}
		job.Output = append(job.Output, outs...)
		job.Next++
		if err := r.save(ctx, *job); err != nil {
			return err
		}
	}
	job.Status, job.Finished = jobDone, time.Now().UTC()
	return r.save(ctx, *job)
}

// runGroup pages through one query, writing one NDJSON file per type.
func (r *bulkRunner) runGroup(ctx context.Context, job *exportJob, dir string, g exportGroup) (outs []exportOutput, err error) {
	filter, err := storage.UnmarshalExpr(g.Filter)
	if err != nil {
		return nil, err
	}
	type file struct {
		f     *os.File
		w     *bufio.Writer
		count int64
	}
	files := map[string]*file{}
	defer func() {
		for _, f := range files {
			if cerr := f.f.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("closing export file: %w", cerr)
			}
		}
	}()
	var v View
	if job.View != "" {
		if r.s.output == nil {
			return nil, fmt.Errorf("export job %s needs output view %q but the server has no output filter", job.ID, job.View)
		}
		if v, err = r.s.output.Named(ctx, job.View); err != nil {
			return nil, fmt.Errorf("export job %s: output view %q: %w", job.ID, job.View, err)
		}
	}
	lastSave := time.Now()
	cursor := ""
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		page, err := r.s.backend.Search(ctx, storage.Query{Types: g.Types, Filter: filter, Count: exportPageSize, Cursor: cursor})
		if err != nil {
			return nil, fmt.Errorf("export query over %s: %w", strings.Join(g.Types, ","), err)
		}
		for _, rec := range page.Records {
			f := files[rec.Type]
			if f == nil {
				fh, err := os.Create(filepath.Join(dir, rec.Type+".ndjson"))
				if err != nil {
					return nil, fmt.Errorf("creating export file: %w", err)
				}
				f = &file{f: fh, w: bufio.NewWriterSize(fh, 64<<10)}
				files[rec.Type] = f
			}
			raw, _, err := r.s.emit(ctx, v, nil, rec)
			if err != nil {
				return nil, err
			}
			f.w.Write(raw)
			if err := f.w.WriteByte('\n'); err != nil {
				return nil, fmt.Errorf("writing export file: %w", err)
			}
			f.count++
		}
		job.Exported += int64(len(page.Records))
		if page.Next == "" {
			break
		}
		cursor = page.Next
		if time.Since(lastSave) > exportSaveEvery {
			if err := r.save(ctx, *job); err != nil {
				return nil, err
			}
			lastSave = time.Now()
		}
		// Let request goroutines run between pages: the export is a
		// background task and must not hold a core for its whole length.
		runtime.Gosched()
	}
	for typ, f := range files {
		if err := f.w.Flush(); err != nil {
			return nil, fmt.Errorf("writing export file: %w", err)
		}
		if err := f.f.Sync(); err != nil {
			return nil, fmt.Errorf("syncing export file: %w", err)
		}
		outs = append(outs, exportOutput{Type: typ, File: typ + ".ndjson", Count: f.count})
	}
	sort.Slice(outs, func(i, j int) bool { return outs[i].Type < outs[j].Type })
	return outs, nil
}
