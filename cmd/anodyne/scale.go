package main

import (
	"errors"
	"flag"
	"time"

	"github.com/anodyne-fhir/anodyne/fhir"
)

// exportFlags configure where Bulk Data export files live and how export
// jobs are shared among the processes of one store.
type exportFlags struct {
	Dir      string
	Workers  int
	LeaseTTL time.Duration
}

func (e *exportFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&e.Dir, "export-dir", "", "keep Bulk Data export files in this directory instead of the database; with several processes on one database it must be shared by all of them (default: in the database, served by every process)")
	fs.IntVar(&e.Workers, "export-workers", 1, "export jobs run at once by this process (0: none; the other processes of the database run them)")
	fs.DurationVar(&e.LeaseTTL, "export-lease", 30*time.Second, "how long a running export job stays with a process that stopped renewing its lease (crashed) before another process resumes it")
}

func (e *exportFlags) validate() error {
	if e.Workers < 0 {
		return errors.New("--export-workers must not be negative")
	}
	if e.LeaseTTL < 100*time.Millisecond {
		return errors.New("--export-lease must be at least 100ms")
	}
	return nil
}

// apply sets the export part of the FHIR configuration.
func (e *exportFlags) apply(cfg *fhir.Config) {
	cfg.ExportDir = e.Dir
	cfg.ExportInStore = e.Dir == ""
	cfg.ExportWorkers = e.Workers
	if e.Workers == 0 {
		cfg.ExportWorkers = -1 // fhir: 0 means one worker
	}
	cfg.ExportLeaseTTL = e.LeaseTTL
}
