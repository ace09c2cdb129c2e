// Package opioid owns Anodyne's opioid arithmetic: the table of opioid
// clinical drugs (RxNorm), the CDC 2022 morphine milligram equivalent
// (MME) conversion factors, the benzodiazepine codes, and the computation
// of MME/day for one MedicationRequest with the reasons when it cannot be
// computed, and of a patient's total over a set of requests.
//
// It is pure logic over decoded FHIR JSON (map[string]any): it must not
// know about HTTP, storage, authorization or how a referenced Medication
// is fetched (the caller passes a Resolver). What is recorded where, and
// when an alert is raised, belongs to its callers (clinical/opioidsafety,
// clinical/cdshooks).
package opioid

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// RxNorm is the code system of every code in the table.
const RxNorm = "http://www.nlm.nih.gov/research/umls/rxnorm"

//go:embed data/opioids.json
var embedded []byte

// Factor is one row of the CDC 2022 conversion table.
type Factor struct {
	Ingredient string  `json:"ingredient"` // RxNorm ingredient RxCUI
	Name       string  `json:"name"`
	Factor     float64 `json:"factor,omitempty"`
	// Form "patch" restricts the factor to transdermal systems, whose
	// strength is a rate in mcg/hr (fentanyl).
	Form string `json:"form,omitempty"`
	// Excluded, when set, says why the ingredient is an opioid that is not
	// counted in MME (buprenorphine).
	Excluded string `json:"excluded,omitempty"`
	Note     string `json:"note,omitempty"`
}

// Ingredient is an active ingredient of a clinical drug with its strength
// per dose unit (mg, or mcg/hr for a patch).
type Ingredient struct {
	RxCUI    string  `json:"rxcui"`
	Strength float64 `json:"strength"`
	Unit     string  `json:"unit"`
}

// Drug is an RxNorm clinical drug (SCD or SBD).
type Drug struct {
	RxCUI string `json:"rxcui"`
	TTY   string `json:"tty"`
	Name  string `json:"name"`
	// Form is the dose unit a doseQuantity counts: tablet, capsule, film,
	// patch, or mL for liquids (strength per mL).
	Form        string       `json:"form"`
	Ingredients []Ingredient `json:"ingredients"`
}

// Code is a benzodiazepine RxNorm code (ingredient or product).
type Code struct {
	RxCUI string `json:"rxcui"`
	TTY   string `json:"tty"`
	Name  string `json:"name"`
}

// file is the shape of the embedded table and of operator files.
type file struct {
	About           string             `json:"about,omitempty"`
	Factors         []Factor           `json:"factors"`
	Drugs           []Drug             `json:"drugs"`
	Benzodiazepines []Code             `json:"benzodiazepines"`
	TimingCodes     map[string]float64 `json:"timingCodes"`
}

// Table is the loaded reference data. It is immutable once loaded and
// safe for concurrent use.
type Table struct {
	factors map[string]Factor
	drugs   map[string]Drug
	benzos  map[string]Code
	timing  map[string]float64
}

// Option configures Load.
type Option func(*loadConfig)

type loadConfig struct {
	extra []source
}

type source struct {
	name string
	data []byte
	path string
}

// WithFile adds an operator file (the embedded file's JSON shape): its
// drugs, factors, benzodiazepine and timing codes are added to the
// embedded ones, an entry with an RxCUI already known replacing it.
func WithFile(path string) Option {
	return func(c *loadConfig) { c.extra = append(c.extra, source{name: path, path: path}) }
}

// WithData is WithFile for a table already in memory (name is for errors).
func WithData(name string, data []byte) Option {
	return func(c *loadConfig) { c.extra = append(c.extra, source{name: name, data: data}) }
}

// Load reads the embedded table and any operator files.
func Load(opts ...Option) (*Table, error) {
	var cfg loadConfig
	for _, o := range opts {
		o(&cfg)
	}
	t := &Table{factors: map[string]Factor{}, drugs: map[string]Drug{}, benzos: map[string]Code{}, timing: map[string]float64{}}
	if err := t.add("embedded opioid table", embedded); err != nil {
		return nil, err
	}
	for _, s := range cfg.extra {
		data := s.data
		if s.path != "" {
			var err error
			if data, err = os.ReadFile(s.path); err != nil {
				return nil, fmt.Errorf("opioid table: %w", err)
			}
		}
		if err := t.add(s.name, data); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *Table) add(name string, data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return fmt.Errorf("opioid table %s: %w", name, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("opioid table %s: data after the table", name)
	}
	for _, x := range f.Factors {
		if x.Ingredient == "" || x.Name == "" || (x.Factor <= 0) == (x.Excluded == "") {
			return fmt.Errorf("opioid table %s: factor %+v needs an ingredient, a name and either a positive factor or an exclusion", name, x)
		}
		if x.Form != "" && x.Form != "patch" {
			return fmt.Errorf("opioid table %s: factor %s: form %q is not patch", name, x.Ingredient, x.Form)
		}
		t.factors[x.Ingredient] = x
	}
	for _, d := range f.Drugs {
		if d.RxCUI == "" || d.Form == "" || len(d.Ingredients) == 0 {
			return fmt.Errorf("opioid table %s: drug %q needs an rxcui, a form and ingredients", name, d.RxCUI)
		}
		for _, in := range d.Ingredients {
			if _, ok := t.factors[in.RxCUI]; !ok {
				return fmt.Errorf("opioid table %s: drug %s: ingredient %s has no conversion factor", name, d.RxCUI, in.RxCUI)
			}
			want := "mg"
			if d.Form == "patch" {
				want = "mcg/hr"
			}
			if in.Strength <= 0 || in.Unit != want {
				return fmt.Errorf("opioid table %s: drug %s: strength of %s must be a positive number of %s", name, d.RxCUI, in.RxCUI, want)
			}
		}
		t.drugs[d.RxCUI] = d
	}
	for _, b := range f.Benzodiazepines {
		if b.RxCUI == "" {
			return fmt.Errorf("opioid table %s: benzodiazepine without rxcui", name)
		}
		t.benzos[b.RxCUI] = b
	}
	for k, v := range f.TimingCodes {
		if v <= 0 {
			return fmt.Errorf("opioid table %s: timing code %s: doses per day must be positive", name, k)
		}
		t.timing[strings.ToUpper(k)] = v
	}
	return nil
}

// Factor returns the conversion row of an RxNorm ingredient.
func (t *Table) Factor(ingredient string) (Factor, bool) {
	f, ok := t.factors[ingredient]
	return f, ok
}

// Drug returns a clinical drug of the table.
func (t *Table) Drug(rxcui string) (Drug, bool) {
	d, ok := t.drugs[rxcui]
	return d, ok
}

// Benzodiazepine reports whether an RxNorm code is a benzodiazepine.
func (t *Table) Benzodiazepine(rxcui string) bool {
	_, ok := t.benzos[rxcui]
	return ok
}
