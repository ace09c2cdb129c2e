package demo

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// anchorKey holds the last day of the data set, fixed at the first run so
// that later runs regenerate exactly the same resources.
const anchorKey = "demo/end-day"

// EndDay returns the data set's last day: the one stored by an earlier
// run, or yesterday (from now: a whole day, so that no reading lies in the
// future) stored for the next runs.
func EndDay(ctx context.Context, kv storage.KV, now time.Time) (time.Time, error) {
	yesterday := now.UTC().AddDate(0, 0, -1).Format("2006-01-02")
	if _, err := kv.PutIfAbsent(ctx, anchorKey, []byte(yesterday), 0); err != nil {
		return time.Time{}, fmt.Errorf("storing the demo end day: %w", err)
	}
	raw, err := kv.Get(ctx, anchorKey)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the demo end day: %w", err)
	}
	t, err := time.Parse("2006-01-02", string(raw))
	if err != nil {
		return time.Time{}, fmt.Errorf("demo end day %q in the store: %w", raw, err)
	}
	return t, nil
}

// LoadReport says what a Load did.
type LoadReport struct {
	Generated int // resources in the data set
	Existing  int // already stored (left untouched)
	Stored    int // written by this load
}

// Load writes the resources of ds that are not stored yet through srv's
// import pipeline (the same validation, indexing and commit observers as
// a PUT), so a second Load of the same data set writes nothing and an
// interrupted one is completed. be is the store srv writes to; tmp is a
// directory for the NDJSON file handed to the importer.
func Load(ctx context.Context, srv *fhir.Server, be storage.Backend, ds DataSet, tmp string) (LoadReport, error) {
	rep := LoadReport{Generated: len(ds.Resources)}
	f, err := os.CreateTemp(tmp, "anodyne-demo-*.ndjson")
	if err != nil {
		return rep, fmt.Errorf("creating the demo import file: %w", err)
	}
	defer os.Remove(f.Name())
	w := bufio.NewWriter(f)
	missing := 0
	for _, r := range ds.Resources {
		typ, id := r["resourceType"].(string), r["id"].(string)
		rec, err := be.Read(ctx, typ, id)
		switch {
		case err == nil && !rec.Deleted:
			rep.Existing++
			continue
		case err != nil && !errors.Is(err, storage.ErrNotFound):
			f.Close()
			return rep, fmt.Errorf("reading %s/%s: %w", typ, id, err)
		}
		line, err := json.Marshal(r)
		if err != nil {
			f.Close()
			return rep, fmt.Errorf("encoding %s/%s: %w", typ, id, err)
		}
		w.Write(line)
		w.WriteByte('\n')
		missing++
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return rep, fmt.Errorf("writing the demo import file: %w", err)
	}
	if err := f.Close(); err != nil {
		return rep, fmt.Errorf("writing the demo import file: %w", err)
	}
	if missing == 0 {
		return rep, nil
	}
	ir, err := srv.Importer().ImportPaths(ctx, []string{filepath.Clean(f.Name())}, fhir.ImportOptions{Restart: true})
	rep.Stored = int(ir.Stored)
	if err != nil {
		return rep, fmt.Errorf("importing the demo data: %w", err)
	}
	if ir.Failed > 0 {
		first := ""
		if len(ir.Failures) > 0 {
			first = fmt.Sprintf(" (first: %s/%s: %s)", ir.Failures[0].Type, ir.Failures[0].ID, ir.Failures[0].Reason)
		}
		return rep, fmt.Errorf("%d demo resources were refused%s", ir.Failed, first)
	}
	return rep, nil
}
