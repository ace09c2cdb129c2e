package fhir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

// The import pipeline: units are validated and indexed in parallel
// (prepareBatch), batches are committed by one writer through the
// observers (commitBatch), and a batch that cannot go in one Commit falls
// back to one update-as-create at a time (commitUpsert).

// prepared is one unit validated, stamped and indexed, ready to commit.
type prepared struct {
	unit
	typ, id string
	res     map[string]any
	write   storage.Write
	err     error
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
		observed, release, err := im.s.observe(ctx, writes)
		if err != nil {
			failures = nil
			return false, fmt.Errorf("observing a batch of %d resources from %s: %w", len(writes), file, err)
		}
		var puts []storage.KVPut
		if mark != nil {
			puts = []storage.KVPut{*mark}
		}
		_, marked, err = im.s.commitObserved(ctx, observed, puts...)
		release()
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
	if !ValidID(parsed.ID) {
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
	var cur storage.Record
	for attempt := 0; ; attempt++ {
		observed, release, err := im.s.observe(ctx, []storage.Write{w})
		if err != nil {
			return fmt.Errorf("observing %s/%s: %w", p.typ, p.id, err)
		}
		if im.replay && attempt > 0 && sameVersionContent(cur, observed[0]) {
			release()
			return nil
		}
		_, _, err = im.s.commitObserved(ctx, observed)
		release()
		if err == nil || !errors.Is(err, storage.ErrVersionConflict) || attempt >= maxWriteAttempts {
			if err != nil {
				return fmt.Errorf("storing %s/%s: %w", p.typ, p.id, err)
			}
			return nil
		}
		var exists bool
		cur, exists, err = im.s.current(ctx, p.typ, p.id)
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

// sameVersionContent reports whether write w would store what cur holds
// already: the same live resource, meta.versionId and meta.lastUpdated
// aside.
func sameVersionContent(cur storage.Record, w storage.Write) bool {
	if cur.ID == "" || cur.Deleted || w.Deleted {
		return false
	}
	a, err1 := DecodeJSON(cur.JSON)
	b, err2 := DecodeJSON(w.JSON)
	if err1 != nil || err2 != nil {
		return false
	}
	for _, v := range []any{a, b} {
		m, _ := v.(map[string]any)
		if meta, ok := m["meta"].(map[string]any); ok {
			delete(meta, "versionId")
			delete(meta, "lastUpdated")
			if len(meta) == 0 {
				delete(m, "meta")
			}
		}
	}
	return reflect.DeepEqual(a, b)
}
