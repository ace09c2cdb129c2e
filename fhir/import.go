package fhir

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Bulk import: NDJSON files (one resource per line, ids kept) and Bundles
// (transaction, batch or collection; urn:uuid references rewritten to the
// ids they get) loaded through the same pipeline as a PUT (validation,
// meta, index entries), in batches: validation and indexing run in
// parallel, one writer commits each batch. Resources keep their ids, so
// running an import again updates instead of duplicating, and a file can
// be resumed from its last committed batch (checkpoints in the KV).

// ImportOptions tunes an import.
type ImportOptions struct {
	// BatchSize is the number of resources per Commit (default 250).
	BatchSize int
	// Workers validate and index in parallel (default GOMAXPROCS).
	Workers int
	// Restart ignores checkpoints left by an earlier, interrupted import
	// of the same files and imports them from the start.
	Restart bool
	// Progress, when set, is called after every batch.
	Progress func(ImportProgress)
	// deferUnresolved makes a transaction Bundle whose conditional
	// reference finds nothing wait for a later round (import_order.go).
	deferUnresolved bool
}

// ImportProgress is a snapshot of a running import.
type ImportProgress struct {
	File             string
	BytesDone, Bytes int64 // over all files
	Stored, Failed   int64
}

// ImportFailure says which resource could not be imported and why.
type ImportFailure struct {
	File string `json:"file"`
	// Line is the 1-based line of an NDJSON file; Entry the 0-based entry
	// of a Bundle (-1 when not applicable).
	Line   int    `json:"line,omitempty"`
	Entry  int    `json:"entry"`
	Type   string `json:"type,omitempty"`
	ID     string `json:"id,omitempty"`
	Reason string `json:"reason"`
	// Forbidden: the caller's grant refused the resource (not a fault of
	// the data; a run with another token may import it).
	Forbidden bool `json:"forbidden,omitempty"`
}

// Where is "file:line" or "file#entry[n]".
func (f ImportFailure) Where() string {
	switch {
	case f.Line > 0:
		return fmt.Sprintf("%s:%d", f.File, f.Line)
	case f.Entry >= 0:
		return fmt.Sprintf("%s#entry[%d]", f.File, f.Entry)
	}
	return f.File
}

// ImportReport is the result of an import.
type ImportReport struct {
	Files   int   `json:"files"`
	Stored  int64 `json:"stored"`
	Failed  int64 `json:"failed"`
	Skipped int64 `json:"skipped"` // already imported before an interruption
	// Retried lists the files imported after the others because a
	// conditional reference of theirs found nothing at first.
	Retried []string `json:"retried,omitempty"`
	// Failures lists each failed resource (capped at maxFailures; Failed
	// has the full count).
	Failures []ImportFailure `json:"failures"`
	Duration time.Duration   `json:"duration"`
}

const (
	importCheckpointPrefix = "bulk/import/"
	importCheckpointTTL    = 30 * 24 * time.Hour
	defaultImportBatch     = 250
	maxFailures            = 1000
	maxImportLine          = 64 << 20
)

// Importer loads resources into the Server's backend.
type Importer struct {
	s *Server
	// authorize applies the Authorizer to each resource ($import over
	// HTTP); a local import by the operator does not.
	authorize bool
	// replay ($import with an Idempotency-Key) writes no new version of a
	// resource already stored with the same content: a copy of a request
	// that was partly or wholly committed then changes nothing more.
	replay bool
}

// Importer returns a bulk importer writing through this server's pipeline
// without authorization checks: for the operator's command line.
func (s *Server) Importer() *Importer { return &Importer{s: s} }

// ImportPaths imports files and directories (walked for *.ndjson and
// *.json). A file whose checkpoint says it was imported completely is
// skipped unless opts.Restart.
func (im *Importer) ImportPaths(ctx context.Context, paths []string, opts ImportOptions) (ImportReport, error) {
	start := time.Now()
	files, total, err := ImportFileList(paths)
	if err != nil {
		return ImportReport{}, err
	}
	tr := &importTracker{prog: ImportProgress{Bytes: total}, files: map[string]fileProgress{}, cb: opts.Progress}
	// Files are imported side by side: a transaction Bundle is validated
	// and planned by one goroutine, so several keep the cores busy while
	// the database serializes the commits. An NDJSON file is parallel
	// inside already.
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	opts.deferUnresolved = true
	deferred, firstErr := im.importFiles(ctx, files, workers, opts, tr)
	if firstErr == nil && len(deferred) > 0 {
		firstErr = im.importDeferred(ctx, deferred, opts, tr)
	}
	rep := tr.rep
	sort.SliceStable(rep.Failures, func(i, j int) bool {
		a, b := rep.Failures[i], rep.Failures[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Entry < b.Entry
	})
	rep.Duration = time.Since(start)
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return rep, firstErr
}

// importFiles imports files side by side; it returns the files deferred
// (errDeferred) and the first error.
func (im *Importer) importFiles(ctx context.Context, files []string, workers int, opts ImportOptions, tr *importTracker) ([]string, error) {
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var deferred []string
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	var firstErr error
	for _, f := range files {
		select {
		case sem <- struct{}{}:
		case <-fctx.Done():
		}
		if fctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := im.importOne(fctx, f, opts, tr)
			if errors.Is(err, errDeferred) {
				tr.mu.Lock()
				deferred = append(deferred, f)
				tr.mu.Unlock()
				return
			}
			if err != nil {
				tr.mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				tr.mu.Unlock()
				cancel()
			}
		}()
	}
	wg.Wait()
	sort.Strings(deferred)
	return deferred, firstErr
}

// importTracker sums the progress and reports of files imported at once.
type importTracker struct {
	mu    sync.Mutex
	rep   ImportReport
	prog  ImportProgress
	files map[string]fileProgress
	cb    func(ImportProgress)
}

type fileProgress struct{ bytes, stored, failed int64 }

func (t *importTracker) update(file string, p fileProgress) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.files[file]
	t.files[file] = p
	t.prog.File = file
	t.prog.BytesDone += p.bytes - old.bytes
	t.prog.Stored += p.stored - old.stored
	t.prog.Failed += p.failed - old.failed
	if t.cb != nil {
		// Under the lock: callers (a terminal progress bar) need not be
		// safe for concurrent use.
		t.cb(t.prog)
	}
}

func (t *importTracker) merge(r ImportReport, complete bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if complete {
		t.rep.Files++
	}
	t.rep.Stored += r.Stored
	t.rep.Failed += r.Failed
	t.rep.Skipped += r.Skipped
	for _, f := range r.Failures {
		if len(t.rep.Failures) < maxFailures {
			t.rep.Failures = append(t.rep.Failures, f)
		}
	}
}

// ImportFileList expands paths into the files an import reads (folders
// are walked for *.ndjson and *.json) and their total size.
func ImportFileList(paths []string) ([]string, int64, error) {
	var files []string
	var total int64
	for _, p := range paths {
		err := filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			if path != p && !strings.HasSuffix(path, ".ndjson") && !strings.HasSuffix(path, ".json") {
				return nil // inside a folder, only FHIR files; named files are taken as given
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			files = append(files, path)
			total += info.Size()
			return nil
		})
		if err != nil {
			return nil, 0, fmt.Errorf("listing import files: %w", err)
		}
	}
	sort.Strings(files)
	return files, total, nil
}

func (im *Importer) importFile(ctx context.Context, path string, opts ImportOptions, rep *ImportReport, progress func(offset int64)) error {
	kv := im.s.backend.KV()
	key, err := checkpointKey(path)
	if err != nil {
		return err
	}
	var cp checkpoint
	if !opts.Restart {
		raw, err := kv.Get(ctx, key)
		switch {
		case err == nil:
			if err := json.Unmarshal(raw, &cp); err != nil {
				return fmt.Errorf("decoding import checkpoint of %s: %w", path, err)
			}
		case !errors.Is(err, storage.ErrNotFound):
			return fmt.Errorf("reading import checkpoint of %s: %w", path, err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if cp.Complete {
		rep.Skipped += int64(cp.Done)
		progress(info.Size())
		im.s.log.InfoContext(ctx, "import: already imported, skipping", "file", path)
		return nil
	}
	fc := &fileCheckpoint{kv: kv, key: key, path: path}
	src := &importSource{name: path, skip: cp.Done}
	switch {
	case strings.HasSuffix(path, ".ndjson"):
		err = im.run(ctx, src, ndjsonUnits(f), opts, rep, fc, progress)
	default:
		raw, rerr := io.ReadAll(f)
		if rerr != nil {
			return fmt.Errorf("reading %s: %w", path, rerr)
		}
		done, n, stored, terr := im.importTransaction(ctx, path, raw, rep, fc, opts.deferUnresolved)
		if terr != nil {
			return terr
		}
		if done {
			if !stored {
				if err := fc.save(ctx, n, true); err != nil {
					return err
				}
			}
			progress(info.Size())
			return nil
		}
		err = im.run(ctx, src, bundleUnits(bytes.NewReader(raw)), opts, rep, fc, progress)
	}
	if err != nil {
		return err
	}
	if err := fc.save(ctx, src.next, true); err != nil {
		return err
	}
	progress(info.Size())
	return nil
}
