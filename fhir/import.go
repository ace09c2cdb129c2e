package fhir

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/conformance"
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
}

// Importer returns a bulk importer writing through this server's pipeline
// without authorization checks: for the operator's command line.
func (s *Server) Importer() *Importer { return &Importer{s: s} }

// unit is one resource to import and where it came from.
type unit struct {
	line, entry int
	raw         []byte
}

type prepared struct {
	unit
	typ, id string
	res     map[string]any
	write   storage.Write
	err     error
}

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
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
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
			var rep ImportReport
			err := im.importFile(fctx, f, opts, &rep, func(offset int64) {
				tr.update(f, fileProgress{bytes: offset, stored: rep.Stored, failed: rep.Failed})
			})
			tr.merge(rep, err == nil)
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

// checkpoint records how many units of a file are committed. The key
// names the file's absolute path, size and modification time, so an
// edited file is imported afresh. It is stored in the same Commit as the
// batch it counts (storage.KVCommitter), so that a resumed import neither
// repeats nor loses a unit whenever the last run was interrupted (Ctrl-C,
// kill -9, power loss). On other backends it is stored right after the
// Commit; an interruption in between repeats that batch (kept ids: new
// versions; a transaction Bundle: its creates once more).
type checkpoint struct {
	Done     int  `json:"done"`
	Complete bool `json:"complete"`
}

// fileCheckpoint writes the checkpoints of one file.
type fileCheckpoint struct {
	kv   storage.KV
	key  string
	path string
}

// put is the checkpoint record saying done units are stored.
func (fc *fileCheckpoint) put(done int, complete bool) storage.KVPut {
	raw, _ := json.Marshal(checkpoint{Done: done, Complete: complete})
	return storage.KVPut{Key: fc.key, Value: raw, TTL: importCheckpointTTL}
}

// save stores the checkpoint on its own, for what no Commit carried.
func (fc *fileCheckpoint) save(ctx context.Context, done int, complete bool) error {
	if fc == nil {
		return nil
	}
	p := fc.put(done, complete)
	if err := fc.kv.Put(ctx, p.Key, p.Value, p.TTL); err != nil {
		return fmt.Errorf("saving import checkpoint of %s: %w", fc.path, err)
	}
	return nil
}

func checkpointKey(path string) (string, error) {
	id, err := ImportFileID(path)
	if err != nil {
		return "", err
	}
	return importCheckpointPrefix + id, nil
}

// ImportFileID identifies a file's content for resuming: its absolute
// path, size and modification time, hashed.
func ImportFileID(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", path, err)
	}
	info, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	h := sha256.Sum256([]byte(abs + "|" + strconv.FormatInt(info.Size(), 10) + "|" + info.ModTime().UTC().Format(time.RFC3339Nano)))
	return hex.EncodeToString(h[:16]), nil
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
		done, n, stored, terr := im.importTransaction(ctx, path, raw, rep, fc)
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

// ReadImportFile calls fn for each resource of an import file, in order:
// each line of an NDJSON file (line is 1-based, entry -1), each entry of
// a Bundle after FlattenBundle (entry 0-based, line 0), or the one
// resource of another JSON file. It stops at fn's first error.
func ReadImportFile(path string, fn func(line, entry int, raw []byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	next := bundleUnits(f)
	if strings.HasSuffix(path, ".ndjson") {
		next = ndjsonUnits(f)
	}
	for {
		u, _, err := next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := fn(u.line, u.entry, u.raw); err != nil {
			return err
		}
	}
}

// importTransaction runs a transaction or batch Bundle through this
// server's Bundle engine (runBundle), so that it is processed exactly as a
// client's would be (urn:uuid and conditional references, ifNoneExist,
// all-or-nothing for a transaction). It reports false, leaving the file to
// the resource-by-resource path, when the file is not such a Bundle, the
// database cannot run transactions, or the Bundle is larger than a client
// could post. n is the number of entries; for a transaction, the
// checkpoint marking the file complete goes into the transaction's own
// Commit when the backend can (stored reports it), so that a replay after
// a crash can never create its resources twice.
func (im *Importer) importTransaction(ctx context.Context, path string, raw []byte, rep *ImportReport, fc *fileCheckpoint) (done bool, n int, stored bool, err error) {
	var probe struct {
		ResourceType string            `json:"resourceType"`
		Type         string            `json:"type"`
		Entry        []json.RawMessage `json:"entry"`
	}
	if json.Unmarshal(raw, &probe) != nil || probe.ResourceType != "Bundle" || (probe.Type != "transaction" && probe.Type != "batch") {
		return false, 0, false, nil
	}
	n = len(probe.Entry)
	if int64(len(raw)) > im.s.maxBody {
		im.s.log.WarnContext(ctx, "import: importing the Bundle's resources in batches", "file", path,
			"reason", fmt.Sprintf("the Bundle is larger than a request may be (%d bytes)", im.s.maxBody))
		return false, n, false, nil
	}
	rctx, marks := ctx, (*commitMarks)(nil)
	if probe.Type == "transaction" {
		// A batch commits entry by entry: no one Commit could carry it.
		rctx, marks = withCommitMarks(ctx, []storage.KVPut{fc.put(n, true)})
	}
	res, err := im.s.runBundle(rctx, raw, "minimal")
	stored = marks != nil && marks.wasStored()
	if cerr := ctx.Err(); cerr != nil && !stored {
		return false, n, false, cerr
	}
	if errors.Is(err, errNoAtomicCommit) || errors.Is(err, errBundleTooLarge) {
		// No transactions on this database, or more entries than a client
		// may post: the Bundle's resources are imported in batches instead.
		im.s.log.WarnContext(ctx, "import: importing the Bundle's resources in batches", "file", path, "reason", err.Error())
		return false, n, false, nil
	}
	if err != nil {
		fe := asError(ctx, im.s.log, err)
		rep.Failed += int64(n) - 1
		im.fail(rep, ImportFailure{File: path, Entry: -1, Reason: fmt.Sprintf("%s rejected (%d entries not imported): %s", probe.Type, n, issuesText(fe.Issues))})
		return true, n, stored, nil
	}
	for i, e := range res.entries {
		if e.err == nil {
			rep.Stored++
			continue
		}
		im.fail(rep, ImportFailure{File: path, Entry: i, Reason: statusLine(e.err.Status) + ": " + issuesText(e.err.Issues)})
	}
	return true, n, stored, nil
}

// importSource tracks the position in one input.
type importSource struct {
	name string
	skip int // units committed before (resume)
	next int // units consumed so far
}

// unitReader yields the next unit and the input offset after it; io.EOF ends.
type unitReader func() (unit, int64, error)

func ndjsonUnits(r io.Reader) unitReader {
	br := bufio.NewReaderSize(r, 1<<20)
	var offset int64
	line := 0
	return func() (unit, int64, error) {
		for {
			b, err := br.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				// A long line: gather it in full, up to the limit.
				full := append([]byte(nil), b...)
				for errors.Is(err, bufio.ErrBufferFull) && len(full) < maxImportLine {
					b, err = br.ReadSlice('\n')
					full = append(full, b...)
				}
				b = full
			}
			if err != nil && !errors.Is(err, io.EOF) {
				if errors.Is(err, bufio.ErrBufferFull) {
					return unit{}, offset, fmt.Errorf("line %d is longer than %d bytes", line+1, maxImportLine)
				}
				return unit{}, offset, fmt.Errorf("reading line %d: %w", line+1, err)
			}
			offset += int64(len(b))
			if len(b) == 0 && errors.Is(err, io.EOF) {
				return unit{}, offset, io.EOF
			}
			line++
			t := bytes.TrimSpace(b)
			if len(t) == 0 {
				if errors.Is(err, io.EOF) {
					return unit{}, offset, io.EOF
				}
				continue
			}
			return unit{line: line, entry: -1, raw: append([]byte(nil), t...)}, offset, nil
		}
	}
}

// bundleUnits reads a whole JSON file: a Bundle yields its entries (see
// FlattenBundle), any other resource itself.
func bundleUnits(r io.Reader) unitReader {
	var units []unit
	var size int64
	var loadErr error
	loaded := false
	i := 0
	return func() (unit, int64, error) {
		if !loaded {
			loaded = true
			raw, err := io.ReadAll(r)
			if err != nil {
				loadErr = fmt.Errorf("reading: %w", err)
			} else {
				size = int64(len(raw))
				var probe struct {
					ResourceType string `json:"resourceType"`
				}
				if err := json.Unmarshal(raw, &probe); err != nil {
					loadErr = fmt.Errorf("not a JSON resource: %w", err)
				} else if probe.ResourceType == "Bundle" {
					entries, err := FlattenBundle(raw)
					if err != nil {
						loadErr = err
					}
					for n, e := range entries {
						units = append(units, unit{entry: n, raw: e})
					}
				} else {
					units = []unit{{entry: -1, raw: raw}}
				}
			}
		}
		if loadErr != nil {
			return unit{}, 0, loadErr
		}
		if i >= len(units) {
			return unit{}, size, io.EOF
		}
		u := units[i]
		i++
		return u, size * int64(i) / int64(len(units)), nil
	}
}

// run imports the units of one source in batches.
// fc, nil for $import over HTTP, records the checkpoints.
func (im *Importer) run(ctx context.Context, src *importSource, next unitReader, opts ImportOptions, rep *ImportReport, fc *fileCheckpoint, progress func(int64)) error {
	batchSize := opts.BatchSize
	if batchSize <= 0 {
		batchSize = defaultImportBatch
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	// Two stages: this goroutine commits batch k while the producer
	// validates and indexes batch k+1 on the other cores. The channel
	// holds one batch, so memory stays bounded.
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan readyBatch, 1)
	produced := make(chan error, 1)
	go func() {
		defer close(ready)
		produced <- im.produce(pctx, src, next, batchSize, workers, ready)
	}()
	var err error
	for rb := range ready {
		if err != nil {
			continue // drain, so that the producer can finish
		}
		rep.Skipped += rb.skipped
		if rb.unreadable != nil {
			im.fail(rep, *rb.unreadable)
		}
		var mark *storage.KVPut
		if fc != nil && rb.next > 0 {
			p := fc.put(rb.next, false)
			mark = &p
		}
		marked := false
		if len(rb.items) > 0 {
			if marked, err = im.commitBatch(ctx, src.name, rb.items, rb.at, rep, mark); err != nil {
				cancel()
				continue
			}
		}
		if rb.next > 0 && !marked {
			if err = fc.save(ctx, rb.next, false); err != nil {
				cancel()
				continue
			}
		}
		progress(rb.offset)
	}
	if perr := <-produced; err == nil {
		err = perr
	}
	return err
}

// readyBatch is a batch validated and indexed, waiting for its commit.
type readyBatch struct {
	items   []prepared
	at      time.Time
	next    int   // units consumed once this batch is committed (checkpoint)
	offset  int64 // input offset after the batch (progress)
	skipped int64
	// unreadable reports an input that could not be read further.
	unreadable *ImportFailure
}

// produce reads units, skips those committed before (resume), and hands
// prepared batches to the committer.
func (im *Importer) produce(ctx context.Context, src *importSource, next unitReader, batchSize, workers int, ready chan<- readyBatch) error {
	batch := make([]unit, 0, batchSize)
	var skipped int64
	send := func(rb readyBatch) error {
		select {
		case ready <- rb:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	flush := func(offset int64) error {
		if len(batch) == 0 && skipped == 0 {
			return nil
		}
		at := now()
		rb := readyBatch{items: im.prepareBatch(ctx, batch, workers, at), at: at, next: src.next, offset: offset, skipped: skipped}
		batch, skipped = make([]unit, 0, batchSize), 0
		return send(rb)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		u, off, err := next()
		if errors.Is(err, io.EOF) {
			return flush(off)
		}
		if err != nil {
			// The input itself is unreadable: what was read is
			// imported, the rest reported, the other files go on.
			if ferr := flush(off); ferr != nil {
				return ferr
			}
			return send(readyBatch{offset: off, unreadable: &ImportFailure{File: src.name, Entry: -1, Line: u.line, Reason: err.Error()}})
		}
		src.next++
		if src.next <= src.skip {
			skipped++
			continue
		}
		batch = append(batch, u)
		if len(batch) == batchSize {
			if err := flush(off); err != nil {
				return err
			}
		}
	}
}

func (im *Importer) fail(rep *ImportReport, f ImportFailure) {
	rep.Failed++
	if len(rep.Failures) < maxFailures {
		rep.Failures = append(rep.Failures, f)
	}
}

// prepareBatch validates and indexes units in parallel.
func (im *Importer) prepareBatch(ctx context.Context, batch []unit, workers int, at time.Time) []prepared {
	out := make([]prepared, len(batch))
	var wg sync.WaitGroup
	work := make(chan int)
	for range min(workers, len(batch)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				out[i] = im.prepareUnit(ctx, batch[i], at)
			}
		}()
	}
	for i := range batch {
		work <- i
	}
	close(work)
	wg.Wait()
	return out
}

// commitBatch commits prepared resources: in one Commit when the backend
// can, else (or when some already exist) one by one. mark, the batch's
// checkpoint, goes into that one Commit when the backend can store it
// there; marked reports whether it did.
func (im *Importer) commitBatch(ctx context.Context, file string, out []prepared, at time.Time, rep *ImportReport, mark *storage.KVPut) (marked bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	// Failures are reported only once the batch is through: a batch that
	// is interrupted is read again on resume and would report them twice.
	var failures []ImportFailure
	var stored int64
	defer func() {
		rep.Stored += stored
		for _, f := range failures {
			im.fail(rep, f)
		}
	}()
	var writes []storage.Write
	var ok []*prepared
	for i := range out {
		p := &out[i]
		if p.err != nil {
			failures = append(failures, failureOf(file, p))
			continue
		}
		writes = append(writes, p.write)
		ok = append(ok, p)
	}
	if len(writes) == 0 {
		return false, nil
	}
	_, kvCommit := storage.As[storage.KVCommitter](im.s.backend)
	if len(writes) > 1 || (mark != nil && kvCommit) {
		observed, err := im.s.observe(ctx, writes)
		if err != nil {
			failures = nil
			return false, fmt.Errorf("observing a batch of %d resources from %s: %w", len(writes), file, err)
		}
		var puts []storage.KVPut
		if mark != nil {
			puts = []storage.KVPut{*mark}
		}
		_, marked, err = im.s.commitObserved(ctx, observed, puts...)
		if err == nil {
			stored = int64(len(writes))
			return marked, nil
		}
		// Some resources exist already (a re-import), the batch repeats an
		// id, or the backend cannot commit several writes at once: fall
		// back to one write at a time for this batch.
		if !errors.Is(err, storage.ErrVersionConflict) && !errors.Is(err, storage.ErrUnsupported) && !errors.Is(err, storage.ErrDuplicateClaim) {
			failures = nil
			return false, fmt.Errorf("committing a batch of %d resources from %s: %w", len(writes), file, err)
		}
	}
	for _, p := range ok {
		if err := im.commitUpsert(ctx, p, at); err != nil {
			if ctx.Err() != nil {
				failures = nil
				return false, ctx.Err()
			}
			p.err = err
			failures = append(failures, failureOf(file, p))
			continue
		}
		stored++
	}
	return false, nil
}

func failureOf(file string, p *prepared) ImportFailure {
	var fe *Error
	forbidden := errors.As(p.err, &fe) && fe.Status == http.StatusForbidden
	return ImportFailure{File: file, Line: p.line, Entry: p.entry, Type: p.typ, ID: p.id, Reason: p.err.Error(), Forbidden: forbidden}
}

// prepareUnit is the CPU part of a write: validate, stamp meta, index,
// authorize. It assumes the resource is new (ExpectVersion 0); commitUpsert
// corrects that when it is not.
func (im *Importer) prepareUnit(ctx context.Context, u unit, at time.Time) prepared {
	p := prepared{unit: u}
	parsed, issues := im.s.validator.Validate(ctx, u.raw)
	p.typ, p.id = parsed.Type, parsed.ID
	if conformance.HasErrors(issues) {
		p.err = errors.New(issuesText(issues))
		return p
	}
	if parsed.Resource == nil {
		p.err = errors.New("not a FHIR resource")
		return p
	}
	if !validID(parsed.ID) {
		p.err = fmt.Errorf("resource id %q is missing or invalid: imported resources keep their ids", parsed.ID)
		return p
	}
	p.res = parsed.Resource
	if err := im.s.conform(ctx, p.typ, p.res); err != nil {
		p.err = err
		if fe := (*Error)(nil); errors.As(err, &fe) {
			p.err = errors.New(issuesText(fe.Issues))
		}
		return p
	}
	p.write, p.err = im.s.prepare(p.typ, p.id, p.res, 0, at, http.MethodPut)
	if p.err == nil && im.authorize {
		p.err = im.s.checkEntries(ctx, ActionUpdate, p.typ, p.id, p.write.Index)
	}
	return p
}

// commitUpsert writes one resource as an update-as-create: a new version
// on top of whatever is current.
func (im *Importer) commitUpsert(ctx context.Context, p *prepared, at time.Time) error {
	w := p.write
	for attempt := 0; ; attempt++ {
		observed, err := im.s.observe(ctx, []storage.Write{w})
		if err != nil {
			return fmt.Errorf("observing %s/%s: %w", p.typ, p.id, err)
		}
		_, _, err = im.s.commitObserved(ctx, observed)
		if err == nil || !errors.Is(err, storage.ErrVersionConflict) || attempt >= maxWriteAttempts {
			if err != nil {
				return fmt.Errorf("storing %s/%s: %w", p.typ, p.id, err)
			}
			return nil
		}
		cur, exists, err := im.s.current(ctx, p.typ, p.id)
		if err != nil {
			return err
		}
		var expect int64
		if exists {
			expect = cur.VersionID
		}
		if w, err = im.s.prepare(p.typ, p.id, p.res, expect, at, http.MethodPut); err != nil {
			return err
		}
	}
}

// issuesText renders OperationOutcome issues for a failure report.
func issuesText(issues []conformance.Issue) string {
	var parts []string
	for _, is := range issues {
		if !isErrorIssue(is) {
			continue
		}
		t := is.Code + ": " + is.Diagnostics
		if is.Expression != "" {
			t += " (at " + is.Expression + ")"
		}
		parts = append(parts, t)
	}
	return strings.Join(parts, "; ")
}

// FlattenBundle turns a transaction, batch or collection Bundle into its
// resources, each with a stable id: the one in request.url ("Type/id"),
// else resource.id, else the uuid of a "urn:uuid:" fullUrl, else the id
// of an absolute fullUrl, else a new one. References to an entry's fullUrl
// anywhere in the Bundle are rewritten to "Type/id", which is what a
// transaction does (http.html#trules). Entries without a resource (DELETE,
// GET) are not imports and are rejected.
func FlattenBundle(raw []byte) ([][]byte, error) {
	v, err := decodeJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("decoding Bundle: %w", err)
	}
	b, ok := v.(map[string]any)
	if !ok || b["resourceType"] != "Bundle" {
		return nil, errors.New("not a Bundle")
	}
	entries, _ := b["entry"].([]any)
	type ent struct {
		res map[string]any
	}
	list := make([]ent, 0, len(entries))
	refs := map[string]string{}
	for i, e := range entries {
		em, _ := e.(map[string]any)
		res, _ := em["resource"].(map[string]any)
		if res == nil {
			return nil, fmt.Errorf("entry[%d] has no resource: only Bundles of resources can be imported", i)
		}
		typ, _ := res["resourceType"].(string)
		fullURL, _ := em["fullUrl"].(string)
		req, _ := em["request"].(map[string]any)
		reqURL, _ := req["url"].(string)
		id := ""
		if t, rid, ok := strings.Cut(reqURL, "/"); ok && t == typ && validID(rid) {
			id = rid
		} else if rid, _ := res["id"].(string); validID(rid) {
			id = rid
		} else if u, ok := strings.CutPrefix(fullURL, "urn:uuid:"); ok && validID(u) {
			id = u
		} else if i := strings.LastIndex(fullURL, "/"+typ+"/"); i >= 0 && validID(fullURL[i+len(typ)+2:]) {
			id = fullURL[i+len(typ)+2:]
		} else {
			id = randomID()
		}
		res["id"] = id
		if fullURL != "" {
			refs[fullURL] = typ + "/" + id
		}
		list = append(list, ent{res: res})
	}
	out := make([][]byte, 0, len(list))
	for _, e := range list {
		rewriteRefs(e.res, refs)
		enc, err := encodeResource(e.res)
		if err != nil {
			return nil, fmt.Errorf("encoding %v/%v: %w", e.res["resourceType"], e.res["id"], err)
		}
		out = append(out, enc)
	}
	return out, nil
}

func rewriteRefs(v any, refs map[string]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if s, ok := c.(string); ok && k == "reference" {
				if to, ok := refs[s]; ok {
					x[k] = to
				}
				continue
			}
			rewriteRefs(c, refs)
		}
	case []any:
		for _, c := range x {
			rewriteRefs(c, refs)
		}
	}
}

// importNDJSON handles POST [base]/$import with an NDJSON body (one
// resource per line, ids kept): a synchronous bulk load for clients that
// push data (anodyne import --server). Every resource needs the caller's
// update permission. The answer is an OperationOutcome with the counts and
// one issue per failed line.
func (s *Server) importNDJSON(c echo.Context) error {
	body, err := s.readBody(c, mimeNDJSON, "application/ndjson", "application/x-ndjson")
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	im := &Importer{s: s, authorize: s.authz != nil}
	var rep ImportReport
	src := &importSource{name: "request"}
	err = im.run(ctx, src, ndjsonUnits(bytes.NewReader(body)), ImportOptions{}, &rep, nil, func(int64) {})
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	issues := []conformance.Issue{{
		Severity: "information", Code: codeInfo,
		Diagnostics: fmt.Sprintf("imported %d resources, %d failed", rep.Stored, rep.Failed),
	}}
	for _, f := range rep.Failures {
		code := codeProcessing
		if f.Forbidden {
			code = codeForbidden
		}
		issues = append(issues, conformance.Issue{
			Severity: "error", Code: code,
			Diagnostics: fmt.Sprintf("line %d: %s", f.Line, f.Reason),
		})
	}
	status := http.StatusOK
	if rep.Stored == 0 && rep.Failed > 0 {
		status = http.StatusUnprocessableEntity
	}
	return writeResource(c, status, outcome(issues))
}
