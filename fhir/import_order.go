package fhir

import (
	"context"
	"errors"
)

// Import order. Files are imported side by side, so the order of the
// command line is not kept; what order matters for is a conditional
// reference ("Practitioner?identifier=…") that must find a resource
// another file creates (Synthea's patient Bundles refer to its
// practitioner and hospital Bundles). Instead of guessing an order from
// file names, a transaction Bundle whose conditional reference finds
// nothing is set aside (nothing of it is stored) and imported again once
// the others are in, round after round while a round imports something;
// what still finds nothing is then reported, naming the reference.

var (
	// errUnresolvedRef is under the *Error of a conditional reference
	// that matched no resource.
	errUnresolvedRef = errors.New("a conditional reference matched no resource")
	// errDeferred: the file waits for a later round.
	errDeferred = errors.New("import deferred until the files it refers to are in")
)

// importDeferred imports the set-aside files one at a time, in name
// order, round after round while a round imports at least one; the last
// round reports what still fails.
func (im *Importer) importDeferred(ctx context.Context, files []string, opts ImportOptions, tr *importTracker) error {
	tr.mu.Lock()
	tr.rep.Retried = append(tr.rep.Retried, files...)
	tr.mu.Unlock()
	for len(files) > 0 {
		var still []string
		for _, f := range files {
			if err := im.importOne(ctx, f, opts, tr); errors.Is(err, errDeferred) {
				still = append(still, f)
			} else if err != nil {
				return err
			}
		}
		if len(still) == len(files) {
			// No progress: the references find nothing for good.
			opts.deferUnresolved = false
			for _, f := range still {
				if err := im.importOne(ctx, f, opts, tr); err != nil {
					return err
				}
			}
			return nil
		}
		files = still
	}
	return nil
}

// importOne imports one file into the tracker's report; a deferred file
// adds nothing to it.
func (im *Importer) importOne(ctx context.Context, f string, opts ImportOptions, tr *importTracker) error {
	var rep ImportReport
	err := im.importFile(ctx, f, opts, &rep, func(offset int64) {
		tr.update(f, fileProgress{bytes: offset, stored: rep.Stored, failed: rep.Failed})
	})
	if errors.Is(err, errDeferred) {
		return err
	}
	tr.merge(rep, err == nil)
	return err
}
