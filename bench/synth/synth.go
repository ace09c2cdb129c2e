// Package synth generates benchmark data with the shape of Synthea
// exports rather than an even spread: patient histories follow a
// heavy-tailed (Pareto) distribution, so that a few patients hold
// thousands of Observations and most hold a few dozen; Observation codes
// are the LOINC codes seen in real Synthea bundles, drawn from a
// Zipf-like distribution over their rank in those bundles (pain scores and
// vital signs common, allergy panels rare); dates spread over years of
// each patient's history. The output is a pure function of the Config
// (seed included), written as NDJSON for "anodyne import".
//
// It owns no product code and must not be imported by it; it knows FHIR
// R4 only as far as writing valid Patient, Encounter and Observation
// resources.
package synth

import (
	"bufio"
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config says what to generate.
type Config struct {
	// Seed makes the output reproducible: the same Config gives the same
	// bytes.
	Seed uint64
	// Resources is the exact number of resources (Patients, Encounters
	// and Observations together).
	Resources int
	// End is the latest clinical date; histories end before it.
	End time.Time
	// MaxPerPatient caps one patient's Observations (default 8,000).
	MaxPerPatient int
	// ZipfS is the exponent of the code distribution (default 1.1):
	// the code of rank r is drawn with weight 1/r^s.
	ZipfS float64
}

func (c Config) withDefaults() Config {
	if c.End.IsZero() {
		c.End = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	}
	if c.MaxPerPatient <= 0 {
		c.MaxPerPatient = 8000
	}
	if c.ZipfS <= 0 {
		c.ZipfS = 1.1
	}
	return c
}

// Code is one Observation code of the table, as seen in Synthea.
type Code struct {
	Code, Category, Unit, UCUM, Display string
	SeenCount                           int // Observations with this code in the source bundles
	Min, Max                            float64
}

//go:embed testdata/loinc-observations.tsv
var codeTable string

// Codes returns the code table, most common first.
func Codes() ([]Code, error) {
	var out []Code
	for n, line := range strings.Split(codeTable, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 8 {
			return nil, fmt.Errorf("synth: code table line %d: %d fields, want 8", n+1, len(f))
		}
		cnt, err1 := strconv.Atoi(f[1])
		lo, err2 := strconv.ParseFloat(f[5], 64)
		hi, err3 := strconv.ParseFloat(f[6], 64)
		if err1 != nil || err2 != nil || err3 != nil || lo > hi {
			return nil, fmt.Errorf("synth: code table line %d: bad count or range", n+1)
		}
		out = append(out, Code{Code: f[0], SeenCount: cnt, Category: f[2], Unit: f[3], UCUM: f[4], Min: lo, Max: hi, Display: f[7]})
	}
	return out, nil
}

// PatientSummary is what the load driver needs to know of one patient.
type PatientSummary struct {
	ID           string         `json:"id"`
	Observations int            `json:"observations"`
	Encounters   int            `json:"encounters"`
	Codes        map[string]int `json:"codes"` // Observations per LOINC code
}

// Manifest describes a generated data set.
type Manifest struct {
	Config       Config           `json:"config"`
	Resources    int              `json:"resources"`
	Observations int              `json:"observations"`
	Encounters   int              `json:"encounters"`
	Patients     []PatientSummary `json:"patients"`
	CodeCounts   map[string]int   `json:"codeCounts"`
	Bytes        int64            `json:"bytes"` // NDJSON written
	Files        []string         `json:"files"` // in import order
}

// ObservationID is the id of the n-th generated Observation (0-based).
func ObservationID(seed uint64, n int) string { return fmt.Sprintf("s%d-o%07d", seed, n) }

// PatientID is the id of the n-th generated Patient.
func PatientID(seed uint64, n int) string { return fmt.Sprintf("s%d-p%05d", seed, n) }

func encounterID(seed uint64, n int) string { return fmt.Sprintf("s%d-e%06d", seed, n) }

// obsPerEncounter is the mean number of Observations one Encounter holds
// (a vital-signs panel plus a few labs, as in Synthea).
const obsPerEncounter = 6

// historySize draws a patient's Observation count: Pareto with xm = 20
// and alpha = 1.2 (mean about 100, P(>2,000) about 0.4%), capped.
func historySize(rng *rand.Rand, max int) int {
	u := 1 - rng.Float64() // (0, 1]
	n := int(20 * math.Pow(u, -1/1.2))
	return min(n, max)
}

// total is the resources one patient with n Observations adds.
func total(n int) int { return 1 + n + (n+obsPerEncounter-1)/obsPerEncounter }

// sampler draws code ranks with weight 1/(rank+1)^s.
type sampler struct{ cum []float64 }

func newSampler(n int, s float64) sampler {
	cum := make([]float64, n)
	sum := 0.0
	for i := range n {
		sum += 1 / math.Pow(float64(i+1), s)
		cum[i] = sum
	}
	for i := range cum {
		cum[i] /= sum
	}
	return sampler{cum: cum}
}

func (z sampler) draw(rng *rand.Rand) int {
	u := rng.Float64()
	lo, hi := 0, len(z.cum)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if z.cum[mid] < u {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

var (
	families = []string{"Lang", "Shields", "Jacobson", "Kerluke", "Windler", "Christiansen", "Wehner", "Alcantar", "Von", "Thiel", "Marvin", "Rodriguez", "Dach", "Okuneva", "Hettinger"}
	givens   = []string{"Arla", "Benito", "Brant", "Carin", "Cathryn", "Cherrie", "Collin", "David", "Dominga", "Dominic", "Hershel", "Joaquin", "Malcolm"}
)

// Write generates the data set into dir (created if missing) as
// Patient.ndjson, Encounter.ndjson and Observation.ndjson, and writes
// manifest.json beside them.
func Write(dir string, cfg Config) (Manifest, error) {
	cfg = cfg.withDefaults()
	if cfg.Resources < 2 {
		return Manifest{}, fmt.Errorf("synth: %d resources: need at least 2", cfg.Resources)
	}
	codes, err := Codes()
	if err != nil {
		return Manifest{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Manifest{}, fmt.Errorf("synth: %w", err)
	}
	m := Manifest{Config: cfg, CodeCounts: map[string]int{}}
	files := map[string]*ndjson{}
	for _, t := range []string{"Patient", "Encounter", "Observation"} {
		f, err := createNDJSON(filepath.Join(dir, t+".ndjson"))
		if err != nil {
			return Manifest{}, err
		}
		defer f.close()
		files[t] = f
		m.Files = append(m.Files, f.path)
	}
	g := generator{cfg: cfg, codes: codes, zipf: newSampler(len(codes), cfg.ZipfS), rng: rand.New(rand.NewPCG(cfg.Seed, 0x5eed)), files: files, m: &m}
	left := cfg.Resources
	for p := 0; left > 0; p++ {
		n := historySize(g.rng, cfg.MaxPerPatient)
		for n > 0 && total(n) > left {
			n--
		}
		if total(n) > left { // one resource left: a patient without history
			n = 0
		}
		if err := g.patient(p, n); err != nil {
			return Manifest{}, err
		}
		left -= total(n)
	}
	for _, f := range files {
		if err := f.close(); err != nil {
			return Manifest{}, err
		}
		m.Bytes += f.bytes
	}
	raw, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return Manifest{}, fmt.Errorf("synth: manifest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), raw, 0o644); err != nil {
		return Manifest{}, fmt.Errorf("synth: manifest: %w", err)
	}
	return m, nil
}

// ReadManifest reads the manifest.json that Write left in dir.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return m, fmt.Errorf("synth: %w", err)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return m, fmt.Errorf("synth: manifest: %w", err)
	}
	return m, nil
}

type generator struct {
	cfg   Config
	codes []Code
	zipf  sampler
	rng   *rand.Rand
	files map[string]*ndjson
	m     *Manifest
}

func (g *generator) patient(p, nObs int) error {
	pid := PatientID(g.cfg.Seed, p)
	birth := g.cfg.End.AddDate(-18-g.rng.IntN(70), -g.rng.IntN(12), -g.rng.IntN(28))
	gender := [...]string{"female", "male"}[g.rng.IntN(2)]
	if err := g.files["Patient"].put(map[string]any{
		"resourceType": "Patient", "id": pid,
		"identifier": []any{map[string]any{"system": "http://anodyne-fhir.org/fhir/sid/bench-mrn", "value": fmt.Sprintf("MRN%d-%05d", g.cfg.Seed, p)}},
		"name":       []any{map[string]any{"use": "official", "family": families[g.rng.IntN(len(families))], "given": []any{givens[g.rng.IntN(len(givens))]}}},
		"gender":     gender,
		"birthDate":  birth.Format(time.DateOnly),
	}); err != nil {
		return err
	}
	sum := PatientSummary{ID: pid, Observations: nObs, Codes: map[string]int{}}
	if nObs > 0 {
		// The history spans 1 to 15 years before End; encounters are
		// spread over it in order, observations follow their encounter.
		span := time.Duration(1+g.rng.IntN(15)) * 365 * 24 * time.Hour
		start := g.cfg.End.Add(-span)
		nEnc := (nObs + obsPerEncounter - 1) / obsPerEncounter
		sum.Encounters = nEnc
		encAt := make([]time.Time, nEnc)
		for i := range encAt {
			encAt[i] = start.Add(time.Duration(g.rng.Int64N(int64(span)))).Truncate(time.Second)
		}
		slices.SortFunc(encAt, time.Time.Compare)
		for i, at := range encAt {
			eid := encounterID(g.cfg.Seed, g.m.Encounters+i)
			if err := g.files["Encounter"].put(map[string]any{
				"resourceType": "Encounter", "id": eid, "status": "finished",
				"class":   map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
				"type":    []any{map[string]any{"coding": []any{map[string]any{"system": "http://snomed.info/sct", "code": "185349003", "display": "Encounter for check up (procedure)"}}}},
				"subject": map[string]any{"reference": "Patient/" + pid},
				"period":  map[string]any{"start": at.Format(time.RFC3339), "end": at.Add(15 * time.Minute).Format(time.RFC3339)},
			}); err != nil {
				return err
			}
		}
		for i := range nObs {
			e := i * nEnc / nObs
			c := g.codes[g.zipf.draw(g.rng)]
			at := encAt[e].Add(time.Duration(i%obsPerEncounter) * time.Minute)
			oid := ObservationID(g.cfg.Seed, g.m.Observations+i)
			if err := g.files["Observation"].put(map[string]any{
				"resourceType": "Observation", "id": oid, "status": "final",
				"category":          []any{map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": c.Category}}}},
				"code":              map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": c.Code, "display": c.Display}}, "text": c.Display},
				"subject":           map[string]any{"reference": "Patient/" + pid},
				"encounter":         map[string]any{"reference": "Encounter/" + encounterID(g.cfg.Seed, g.m.Encounters+e)},
				"effectiveDateTime": at.Format(time.RFC3339),
				"valueQuantity":     map[string]any{"value": g.value(c), "unit": c.Unit, "system": "http://unitsofmeasure.org", "code": c.UCUM},
			}); err != nil {
				return err
			}
			sum.Codes[c.Code]++
			g.m.CodeCounts[c.Code]++
		}
		g.m.Encounters += nEnc
		g.m.Observations += nObs
	}
	g.m.Patients = append(g.m.Patients, sum)
	g.m.Resources += total(nObs)
	return nil
}

// value draws a reading in the code's observed range: a whole number for
// scores, else two decimals (json.Number keeps the text exact).
func (g *generator) value(c Code) json.Number {
	v := c.Min + g.rng.Float64()*(c.Max-c.Min)
	if strings.Contains(c.UCUM, "score") {
		return json.Number(strconv.Itoa(int(math.Round(v))))
	}
	return json.Number(strconv.FormatFloat(v, 'f', 2, 64))
}

type ndjson struct {
	path  string
	f     *os.File
	w     *bufio.Writer
	bytes int64
}

func createNDJSON(path string) (*ndjson, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}
	return &ndjson{path: path, f: f, w: bufio.NewWriterSize(f, 1<<16)}, nil
}

func (n *ndjson) put(res map[string]any) error {
	raw, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("synth: encode %s: %w", res["id"], err)
	}
	raw = append(raw, '\n')
	n.bytes += int64(len(raw))
	if _, err := n.w.Write(raw); err != nil {
		return fmt.Errorf("synth: write %s: %w", n.path, err)
	}
	return nil
}

func (n *ndjson) close() error {
	if n.f == nil {
		return nil
	}
	err := n.w.Flush()
	if cerr := n.f.Close(); err == nil {
		err = cerr
	}
	n.f = nil
	if err != nil {
		return fmt.Errorf("synth: %s: %w", n.path, err)
	}
	return nil
}
