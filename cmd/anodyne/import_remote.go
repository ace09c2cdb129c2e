package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/fhir"
)

// remoteImport is one run of `anodyne import --server`: the files go to
// the server one at a time, transaction and batch Bundles to the base as
// they are, every other resource in NDJSON chunks to $import, and the
// state file records after each answer how far each file got.
type remoteImport struct {
	ctx       context.Context
	cfg       importConfig
	rm        remote
	st        importState
	bar       *progressBar
	batch     int   // units per $import chunk
	total     int64 // bytes of all the files
	bytesDone int64 // bytes of the files done
	rep       fhir.ImportReport
}

// importRemote sends transaction and batch Bundles to the server's base
// as they are, and every other resource in NDJSON chunks to $import.
func importRemote(ctx context.Context, cfg importConfig, paths []string, bar *progressBar) (fhir.ImportReport, error) {
	start := time.Now()
	ri := &remoteImport{ctx: ctx, cfg: cfg, rm: cfg.remote(), bar: bar, batch: cfg.batch}
	files, total, err := fhir.ImportFileList(paths)
	if err != nil {
		return ri.report(start), err
	}
	ri.total = total
	if ri.st, err = loadImportState(cfg.state); err != nil {
		return ri.report(start), err
	}
	if ri.batch <= 0 {
		ri.batch = 1000
	}
	err = ri.rounds(files)
	return ri.report(start), err
}

// report is the report so far, with its duration.
func (ri *remoteImport) report(start time.Time) fhir.ImportReport {
	ri.rep.Duration = time.Since(start)
	return ri.rep
}

// rounds imports the files in order, setting aside the transaction
// Bundles whose conditional reference finds nothing yet; as a direct
// import (fhir/import_order.go), the set-aside Bundles go again, round
// after round while one goes in, and the last round reports.
func (ri *remoteImport) rounds(files []string) error {
	var deferred []string
	for _, path := range files {
		err := ri.file(path, true)
		if errors.Is(err, errWaitForRefs) {
			deferred = append(deferred, path)
			continue
		}
		if err != nil {
			return err
		}
	}
	ri.rep.Retried = deferred
	for len(deferred) > 0 {
		var still []string
		for _, path := range deferred {
			err := ri.file(path, true)
			if errors.Is(err, errWaitForRefs) {
				still = append(still, path)
			} else if err != nil {
				return err
			}
		}
		if len(still) == len(deferred) {
			for _, path := range still {
				if err := ri.file(path, false); err != nil {
					return err
				}
			}
			return nil
		}
		deferred = still
	}
	return nil
}

// file imports one file; with deferOK a transaction Bundle whose
// conditional reference finds nothing waits for a later round.
func (ri *remoteImport) file(path string, deferOK bool) error {
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	id, err := fhir.ImportFileID(path)
	if err != nil {
		return err
	}
	cp := ri.st[id]
	if ri.cfg.restart {
		cp.Done, cp.Complete = 0, false
	}
	if cp.Complete {
		ri.bytesDone += info.Size()
		ri.rep.Files++
		ri.rep.Skipped += int64(cp.Done)
		return nil
	}
	if strings.HasSuffix(path, ".json") {
		sent, n, err := postBundle(ri.ctx, ri.rm, path, id, deferOK, &ri.rep)
		if err != nil {
			return err
		}
		if sent {
			cp.Done = n
			return ri.complete(id, cp, info.Size())
		}
	}
	if err := ri.units(path, id, &cp); err != nil {
		return err
	}
	return ri.complete(id, cp, info.Size())
}

// complete records a file as done.
func (ri *remoteImport) complete(id string, cp fileCheckpoint, size int64) error {
	cp.Complete = true
	ri.st[id] = cp
	if err := ri.st.save(ri.cfg.state); err != nil {
		return err
	}
	ri.bytesDone += size
	ri.rep.Files++
	ri.bar.update(ri.bytesDone, ri.total, ri.rep.Stored, ri.rep.Failed)
	return nil
}

// units sends the units of a file past its checkpoint cp in chunks to
// $import. The state advances only after the server answered for a
// chunk, so a resumed run repeats at most one chunk, with the same
// Idempotency-Key (importKey), which the server answers from its record.
func (ri *remoteImport) units(path, id string, cp *fileCheckpoint) error {
	var chunk bytes.Buffer
	var where []int // line or entry of each unit in the chunk
	unitNo := 0
	send := func() error {
		if len(where) == 0 {
			return nil
		}
		if err := postChunk(ri.ctx, ri.rm, path, chunk.Bytes(), where, importKey(id, cp.Done, unitNo), &ri.rep); err != nil {
			return err
		}
		cp.Done = unitNo
		ri.st[id] = *cp
		chunk.Reset()
		where = where[:0]
		ri.bar.update(ri.bytesDone, ri.total, ri.rep.Stored, ri.rep.Failed)
		return ri.st.save(ri.cfg.state)
	}
	err := fhir.ReadImportFile(path, func(line, entry int, raw []byte) error {
		unitNo++
		if unitNo <= cp.Done {
			ri.rep.Skipped++
			return nil
		}
		chunk.Write(raw)
		chunk.WriteByte('\n')
		if line > 0 {
			where = append(where, line)
		} else {
			where = append(where, -1-entry)
		}
		if len(where) >= ri.batch || chunk.Len() > 8<<20 {
			return send()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return send()
}
