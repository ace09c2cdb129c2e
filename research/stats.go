package research

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/deid"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Small-cell suppression of $stats answers.
//
// A cell is the statistics of one code and unit over one selection: a
// cohort of subjects (or every patient) and a period on the project's
// timeline. A cell over fewer than k distinct patients (k is the rules
// file's minCellPatients, 11 by default), but more than none, is withheld.
//
// Complementary suppression. An attacker holding several released cells
// of the same code and unit can add and subtract them (a total minus the
// other periods, a cohort minus one member). Every quantity so derived is
// a combination of the atoms of the released selections: the classes of
// samples lying in exactly the same released cells. A cell is released
// only if, with it added to the project's released cells, every atom
// holds no patient or at least k distinct ones; so any union of atoms
// (every derivable cell) holds none or at least k. The released cells of a
// project (not of one client: its clients can pool answers) are kept in
// the KV; an identical cell asked again is answered again. At most
// maxReleased different cells per project, code and unit are remembered;
// beyond that, new ones are withheld.

const (
	cellsPrefix = "research/cells/" // + project + "/" + hash of code and unit: released cells
	maxReleased = 500
	dayMillis   = int64(24 * time.Hour / time.Millisecond)
	probeID     = "stats-probe"
	probeValue  = "12.345"
	probeTime   = "2020-06-15T10:30:00Z"
)

var _ fhir.StatsView = (*view)(nil)

// Samples rewrites index samples as the de-identified resources would
// show them (subject pseudonym, date shifted by the patient's offset),
// after checking on a probe Observation of the code that the rules do
// exactly that to it and leave its value and unit alone.
func (v *view) Samples(ctx context.Context, code string, samples []storage.Sample) (bool, error) {
	ok, err := v.probe(code)
	if err != nil || !ok {
		return false, err
	}
	max := v.f.deid.MaxShiftDays()
	for i := range samples {
		s := &samples[i]
		shift := deid.ShiftDays(v.key, s.Subject, max)
		if s.Subject != "" {
			typ, id, _ := cut(s.Subject, '/')
			s.Subject = typ + "/" + deid.Pseudonym(v.key, typ, id)
		}
		if s.Date != storage.MinDate {
			s.Date += int64(shift) * dayMillis
		}
	}
	return true, nil
}

// probe de-identifies a probe Observation of code and reports whether the
// rules kept its value and unit and moved its subject and date exactly as
// Samples does.
func (v *view) probe(code string) (bool, error) {
	system, c, _ := strings.Cut(code, "|")
	coding := map[string]any{"code": c}
	if system != "" {
		coding["system"] = system
	}
	res := map[string]any{"resourceType": "Observation", "id": probeID, "status": "final",
		"code":              map[string]any{"coding": []any{coding}},
		"subject":           map[string]any{"reference": "Patient/" + probeID},
		"effectiveDateTime": probeTime,
		"valueQuantity":     map[string]any{"value": json.Number(probeValue), "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
	}
	out, _, err := v.f.deid.Apply(res, v.key)
	if err != nil {
		return false, fmt.Errorf("research: probing the rules for $stats: %w", err)
	}
	q, _ := out["valueQuantity"].(map[string]any)
	if q == nil || fmt.Sprint(q["value"]) != probeValue || q["code"] != "mm[Hg]" || q["system"] != "http://unitsofmeasure.org" {
		return false, nil
	}
	subj, _ := out["subject"].(map[string]any)
	if subj == nil || subj["reference"] != "Patient/"+deid.Pseudonym(v.key, "Patient", probeID) {
		return false, nil
	}
	t, _ := time.Parse(time.RFC3339, probeTime)
	want := t.AddDate(0, 0, deid.ShiftDays(v.key, "Patient/"+probeID, v.f.deid.MaxShiftDays())).Format(time.RFC3339)
	return out["effectiveDateTime"] == want, nil
}

// releasedCell is the stored form of a released cell (pinned: it is read
// back by later requests).
type releasedCell struct {
	Subjects []string `json:"s,omitempty"` // nil: every patient
	All      bool     `json:"all,omitempty"`
	Start    int64    `json:"a"`
	End      int64    `json:"b"`
}

func (c releasedCell) same(o releasedCell) bool {
	return c.All == o.All && c.Start == o.Start && c.End == o.End && slices.Equal(c.Subjects, o.Subjects)
}

func (c releasedCell) holds(s storage.Sample) bool {
	if s.Date < c.Start || s.Date > c.End {
		return false
	}
	if c.All {
		return true
	}
	_, found := slices.BinarySearch(c.Subjects, s.Subject)
	return found
}

// Release applies small-cell and complementary suppression (see the top
// of this file).
func (v *view) Release(ctx context.Context, cells []fhir.StatsCell, universe [][]storage.Sample) ([]bool, error) {
	k := v.f.deid.MinCellPatients()
	out := make([]bool, len(cells))
	// One project's releases are decided one at a time in this process.
	v.f.cellsMu.Lock()
	defer v.f.cellsMu.Unlock()
	for i, c := range cells {
		rc := releasedCell{Subjects: c.Subjects, All: c.Subjects == nil, Start: c.Start, End: c.End}
		key := cellsPrefix + v.project + "/" + hashCell(c.Code, c.Unit)
		released, err := v.loadCells(ctx, key)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(released, rc.same) {
			out[i] = true
			continue
		}
		if len(released) >= maxReleased {
			continue
		}
		candidate := append(slices.Clip(released), rc)
		if !atomsSafe(candidate, universe[i], k) {
			continue
		}
		raw, err := json.Marshal(candidate)
		if err != nil {
			return nil, fmt.Errorf("research: encoding released cells: %w", err)
		}
		if err := v.f.kv.Put(ctx, key, raw, 0); err != nil {
			return nil, fmt.Errorf("research: recording a released cell: %w", err)
		}
		out[i] = true
	}
	return out, nil
}

func hashCell(code, unit string) string {
	h := sha256.Sum256([]byte(code + "\x00" + unit))
	return hex.EncodeToString(h[:12])
}

func (v *view) loadCells(ctx context.Context, key string) ([]releasedCell, error) {
	raw, err := v.f.kv.Get(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("research: reading released cells: %w", err)
	}
	var cells []releasedCell
	if err := json.Unmarshal(raw, &cells); err != nil {
		return nil, fmt.Errorf("research: released cells are damaged: %w", err)
	}
	return cells, nil
}

// atomsSafe reports whether every atom of cells (the samples lying in
// exactly the same cells, at least one) holds no patient or at least k.
// A sample without a subject counts as a patient of its own.
func atomsSafe(cells []releasedCell, universe []storage.Sample, k int) bool {
	patients := map[string]map[string]bool{} // signature -> patients
	sig := make([]byte, (len(cells)+7)/8)
	for _, s := range universe {
		clear(sig)
		inAny := false
		for j, c := range cells {
			if c.holds(s) {
				sig[j/8] |= 1 << (j % 8)
				inAny = true
			}
		}
		if !inAny {
			continue
		}
		who := s.Subject
		if who == "" {
			who = "\x00" + s.ID
		}
		key := string(sig)
		if patients[key] == nil {
			patients[key] = map[string]bool{}
		}
		patients[key][who] = true
	}
	for _, ps := range patients {
		if len(ps) < k {
			return false
		}
	}
	return true
}
