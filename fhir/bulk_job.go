package fhir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/lease"
)

// Bulk Data export jobs (hl7.org/fhir/uv/bulkdata/export.html). A job is a
// KV record (bulkJobPrefix + id) and its NDJSON files (exportFiles: in the
// KV by default, or in a directory shared by every process). The record is
// the source of truth, so that any process sharing the store answers any
// job's status and serves its files.
//
// A job runs in one process at a time: the worker that takes it holds the
// lease bulkLeasePrefix + id (storage/lease) and renews it while it runs.
// A process that dies stops renewing; once the lease expires, a worker of
// another process (or of the restarted one) takes the job over and resumes
// it from its last finished query group, so a crash loses at most one
// group's work. Every checkpoint is a compare-and-swap against the record
// as the worker last wrote it: a worker whose job was deleted by the
// client, or taken over after a stall, finds the record changed and stops
// instead of overwriting it.

const (
	bulkJobPrefix   = "bulk/export/job/"
	bulkLeasePrefix = "bulk/export/lease/"
	// exportLeaseTTL is how long a job stays with a process that stopped
	// renewing (Config.ExportLeaseTTL overrides it).
	exportLeaseTTL = 30 * time.Second
	// exportPageSize is how many resources one storage query returns; the
	// worker yields between pages so interactive requests keep their share.
	exportPageSize = 500
	// exportSaveEvery bounds how often progress is written to the KV.
	exportSaveEvery = time.Second
	// exportRescan is how often an idle worker looks for jobs queued by
	// other processes sharing the store, or left by one that died.
	exportRescan = 10 * time.Second
	// exportRetention is how long finished jobs and their files are kept
	// when the client does not DELETE them (the manifest's Expires).
	exportRetention = 24 * time.Hour
)

var newline = []byte{'\n'}

// errJobChanged: the job record is not what this worker last wrote.
var errJobChanged = errors.New("export job changed by another process")

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
	// Size is the file's length in bytes (what a KV-stored file is read to).
	Size int64 `json:"size,omitempty"`
}

// bulkRunner runs export jobs in the background with bounded concurrency.
type bulkRunner struct {
	s        *Server
	files    exportFiles
	workers  int
	owner    string        // this process's lease owner
	leaseTTL time.Duration // lease of a running job
	rescan   time.Duration
	log      *slog.Logger
	wake     chan struct{}
	stop     context.CancelFunc
	done     sync.WaitGroup

	// direct runs one job in the caller's goroutine (Export): files go
	// straight into a directory and nothing is recorded in the KV.
	direct bool

	mu        sync.Mutex
	running   map[string]context.CancelFunc // jobs in progress in this process
	cancelled map[string]bool               // cancelled while running: never save them again
}

// runState is a job being run, with its record as this worker last wrote
// it (the compare value of the next checkpoint).
type runState struct {
	exportJob
	prev []byte
}

// newBulkRunner starts workers goroutines (none when workers < 0).
func newBulkRunner(s *Server, files exportFiles, workers int, leaseTTL time.Duration) *bulkRunner {
	if leaseTTL <= 0 {
		leaseTTL = exportLeaseTTL
	}
	ctx, stop := context.WithCancel(context.Background())
	r := &bulkRunner{
		s: s, files: files, workers: workers, log: s.log,
		owner: lease.NewOwner(), leaseTTL: leaseTTL, rescan: min(exportRescan, leaseTTL),
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
// keeps its checkpoint; its lease is released, so that another process
// (or the next start) resumes it at once.
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
	t := time.NewTicker(r.rescan)
	defer t.Stop()
	for {
		for {
			ran, err := r.runNext(ctx)
			if err != nil && ctx.Err() == nil {
				r.log.ErrorContext(ctx, "bulk export: looking for jobs", "err", err)
			}
			if !ran || ctx.Err() != nil {
				break
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

// runNext runs the oldest unfinished job whose lease it can take, and
// reports whether it ran one.
func (r *bulkRunner) runNext(ctx context.Context) (bool, error) {
	pending, err := r.pending(ctx)
	if err != nil {
		return false, err
	}
	for _, id := range pending {
		if !r.reserve(id) {
			continue
		}
		held, err := lease.Hold(ctx, r.s.backend.KV(), bulkLeasePrefix+id, r.owner, r.leaseTTL, func(lctx context.Context) error {
			return r.run(lctx, id)
		})
		r.release(id)
		switch {
		case errors.Is(err, lease.ErrLost):
			r.log.WarnContext(ctx, "bulk export: lease lost; another process resumes the job", "job", id, "err", err)
		case err != nil && ctx.Err() == nil:
			return held, err
		}
		if held {
			return true, nil
		}
	}
	return false, nil
}

// pending lists the unfinished jobs, oldest first, and removes finished
// ones past retention.
func (r *bulkRunner) pending(ctx context.Context) ([]string, error) {
	kv := r.s.backend.KV()
	keys, err := kv.List(ctx, bulkJobPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing export jobs: %w", err)
	}
	var jobs []exportJob
	for _, k := range keys {
		job, _, err := r.load(ctx, strings.TrimPrefix(k, bulkJobPrefix))
		if errors.Is(err, storage.ErrNotFound) {
			continue // cancelled meanwhile
		}
		if err != nil {
			return nil, err
		}
		switch job.Status {
		case jobQueued, jobRunning:
			jobs = append(jobs, job)
		case jobDone, jobFailed:
			if !job.Finished.IsZero() && time.Since(job.Finished) > exportRetention {
				if err := r.cancel(ctx, job.ID); err != nil {
					r.log.WarnContext(ctx, "bulk export: removing an expired job", "job", job.ID, "err", err)
				}
			}
		}
	}
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].Created.Before(jobs[j].Created) })
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.ID
	}
	return ids, nil
}

// reserve marks id as taken by a worker of this process.
func (r *bulkRunner) reserve(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, busy := r.running[id]; busy || r.cancelled[id] {
		return false
	}
	r.running[id] = nil // run sets the cancel func
	return true
}

func (r *bulkRunner) release(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, id)
	delete(r.cancelled, id)
}

// load reads a job and the record's bytes.
func (r *bulkRunner) load(ctx context.Context, id string) (exportJob, []byte, error) {
	raw, err := r.s.backend.KV().Get(ctx, bulkJobPrefix+id)
	if err != nil {
		return exportJob{}, nil, fmt.Errorf("reading export job %s: %w", id, err)
	}
	var job exportJob
	if err := json.Unmarshal(raw, &job); err != nil {
		return exportJob{}, nil, fmt.Errorf("decoding export job %s: %w", id, err)
	}
	return job, raw, nil
}

// create records a new job.
func (r *bulkRunner) create(ctx context.Context, job exportJob) error {
	raw, err := json.Marshal(job)
	if err != nil {
		return fmt.Errorf("encoding export job %s: %w", job.ID, err)
	}
	if err := r.s.backend.KV().Put(ctx, bulkJobPrefix+job.ID, raw, 0); err != nil {
		return fmt.Errorf("saving export job %s: %w", job.ID, err)
	}
	return nil
}

// save checkpoints a running job: a compare-and-swap against the record
// this worker last wrote, so that a job deleted by the client or taken
// over by another process is never written again (errJobChanged). A job
// cancelled in this process is not saved either (context.Canceled).
func (r *bulkRunner) save(ctx context.Context, st *runState) error {
	if r.direct {
		return nil
	}
	raw, err := json.Marshal(st.exportJob)
	if err != nil {
		return fmt.Errorf("encoding export job %s: %w", st.ID, err)
	}
	r.mu.Lock()
	cancelled := r.cancelled[st.ID]
	r.mu.Unlock()
	if cancelled {
		return context.Canceled
	}
	ok, err := r.s.backend.KV().CompareAndSwap(ctx, bulkJobPrefix+st.ID, st.prev, raw, 0)
	if err != nil {
		return fmt.Errorf("saving export job %s: %w", st.ID, err)
	}
	if !ok {
		return fmt.Errorf("saving export job %s: %w", st.ID, errJobChanged)
	}
	st.prev = raw
	return nil
}

// cancel deletes a job and its files; a job running here is stopped
// first, one running elsewhere stops at its next checkpoint.
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
	return r.files.remove(ctx, id)
}

// run executes job id, whose lease the caller holds, from its checkpoint
// and records the outcome.
func (r *bulkRunner) run(parent context.Context, id string) error {
	job, raw, err := r.load(parent, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil // deleted since it was listed
	}
	if err != nil {
		return err
	}
	if job.Status == jobDone || job.Status == jobFailed {
		return nil // finished by another process since it was listed
	}
	st := &runState{exportJob: job, prev: raw}
	ctx, stop := context.WithCancel(parent)
	defer stop()
	r.mu.Lock()
	r.running[id] = stop
	cancelled := r.cancelled[id]
	r.mu.Unlock()
	if cancelled {
		return nil // deleted by the client between reserve and start
	}
	start := time.Now()
	err = r.execute(ctx, st)
	switch {
	case err == nil:
		r.s.jobEvent("export", "completed")
		r.log.InfoContext(ctx, "bulk export finished", "job", id, "resources", st.Exported, "duration_ms", time.Since(start).Milliseconds())
	case errors.Is(err, errJobChanged):
		r.log.InfoContext(parent, "bulk export stopped: the job record changed elsewhere", "job", id)
		r.removeIfDeleted(context.WithoutCancel(parent), id)
	case ctx.Err() != nil:
		// Cancelled by the client, stopped by shutdown or the lease was
		// lost: the record (if any) keeps its checkpoint.
		r.log.InfoContext(parent, "bulk export interrupted", "job", id, "err", err)
		r.removeIfDeleted(context.WithoutCancel(parent), id)
	default:
		r.log.ErrorContext(ctx, "bulk export failed", "job", id, "err", err)
		r.s.jobEvent("export", "failed")
		st.Status, st.Failure, st.Finished = jobFailed, err.Error(), time.Now().UTC()
		if serr := r.save(ctx, st); serr != nil && !errors.Is(serr, context.Canceled) {
			r.log.ErrorContext(ctx, "bulk export: recording failure", "job", id, "err", serr)
		}
	}
	return nil
}

// removeIfDeleted removes the files of a job whose record is gone: the
// client deleted it while this worker was still writing files.
func (r *bulkRunner) removeIfDeleted(ctx context.Context, id string) {
	if _, _, err := r.load(ctx, id); !errors.Is(err, storage.ErrNotFound) {
		return
	}
	if err := r.files.remove(ctx, id); err != nil {
		r.log.WarnContext(ctx, "bulk export: removing the files of a deleted job", "job", id, "err", err)
	}
}

func (r *bulkRunner) execute(ctx context.Context, st *runState) error {
	st.Status = jobRunning
	// Resuming: the group at the checkpoint may have been half written.
	// Its files are rewritten from scratch; the finished ones are kept.
	st.Exported = 0
	for _, o := range st.Output {
		st.Exported += o.Count
	}
	if err := r.save(ctx, st); err != nil {
		return err
	}
	for st.Next < len(st.Groups) {
		outs, err := r.runGroup(ctx, st, st.Groups[st.Next])
		if err != nil {
			return err
		}
		st.Output = append(st.Output, outs...)
		st.Next++
		if err := r.save(ctx, st); err != nil {
			return err
		}
	}
	st.Status, st.Finished = jobDone, time.Now().UTC()
	return r.save(ctx, st)
}

// runGroup pages through one query, writing one NDJSON file per type.
func (r *bulkRunner) runGroup(ctx context.Context, st *runState, g exportGroup) (outs []exportOutput, err error) {
	filter, err := storage.UnmarshalExpr(g.Filter)
	if err != nil {
		return nil, err
	}
	type file struct {
		w     exportFileWriter
		count int64
	}
	files := map[string]*file{}
	defer func() {
		if err != nil {
			for _, f := range files {
				f.w.abort()
			}
		}
	}()
	var v View
	if st.View != "" {
		if r.s.output == nil {
			return nil, fmt.Errorf("export job %s needs output view %q but the server has no output filter", st.ID, st.View)
		}
		if v, err = r.s.output.Named(ctx, st.View); err != nil {
			return nil, fmt.Errorf("export job %s: output view %q: %w", st.ID, st.View, err)
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
				w, err := r.files.create(ctx, st.ID, rec.Type+".ndjson")
				if err != nil {
					return nil, err
				}
				f = &file{w: w}
				files[rec.Type] = f
			}
			raw, _, err := r.s.emit(ctx, v, nil, rec)
			if err != nil {
				return nil, err
			}
			if _, err := f.w.Write(raw); err != nil {
				return nil, err
			}
			if _, err := f.w.Write(newline); err != nil {
				return nil, err
			}
			f.count++
		}
		st.Exported += int64(len(page.Records))
		if page.Next == "" {
			break
		}
		cursor = page.Next
		if time.Since(lastSave) > exportSaveEvery {
			if err := r.save(ctx, st); err != nil {
				return nil, err
			}
			lastSave = time.Now()
		}
		// Let request goroutines run between pages: the export is a
		// background task and must not hold a core for its whole length.
		runtime.Gosched()
	}
	for typ, f := range files {
		size, err := f.w.commit()
		if err != nil {
			return nil, err
		}
		outs = append(outs, exportOutput{Type: typ, File: typ + ".ndjson", Count: f.count, Size: size})
	}
	sort.Slice(outs, func(i, j int) bool { return outs[i].Type < outs[j].Type })
	return outs, nil
}
