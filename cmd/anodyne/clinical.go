package main

import (
	"fmt"
	"log/slog"

	"github.com/anodyne-fhir/anodyne/clinical/opioid"
	"github.com/anodyne-fhir/anodyne/clinical/opioidsafety"
	"github.com/anodyne-fhir/anodyne/clinical/rpm"
	"github.com/anodyne-fhir/anodyne/fhir"
)

// clinical is the clinical logic every server on a database runs, served
// or offline (anodyne import): the same observers in the same order, so
// that data imported directly gets the same derived resources.
type clinical struct {
	opioids   *opioid.Table
	observers []fhir.CommitObserver
}

// loadClinical loads the opioid table (the embedded one, extended or
// overridden by opioidTable when set) and the remote-monitoring
// thresholds. A bad table file stops the start with the file and reason.
func loadClinical(opioidTable string, log *slog.Logger) (*clinical, error) {
	var opts []opioid.Option
	if opioidTable != "" {
		opts = append(opts, opioid.WithFile(opioidTable))
	}
	tab, err := opioid.Load(opts...)
	if err != nil {
		return nil, fmt.Errorf("--opioid-table: %w", err)
	}
	rpmObserver, err := rpm.NewDefaultObserver(log)
	if err != nil {
		return nil, fmt.Errorf("remote monitoring thresholds: %w", err)
	}
	return &clinical{
		opioids:   tab,
		observers: []fhir.CommitObserver{opioidsafety.NewObserver(tab, log), rpmObserver},
	}, nil
}

// opioidTableHelp is the help of --opioid-table (serve and import).
const opioidTableHelp = "JSON file of opioid drugs, conversion factors, benzodiazepine and timing codes that extends the embedded RxNorm table (an entry with a known RxCUI replaces it; format: README \"Opioid safety\")"
