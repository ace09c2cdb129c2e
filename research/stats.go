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
// the KV (replaced by compare-and-swap, so replicas agree); an identical
// cell asked again is answered again. At most
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
	// A patient has many samples: its pseudonym and shift (two HMACs)
	// are computed once.
	type viewed struct {
		subject string
		shift   int64
	}
	seen := map[string]viewed{}
	for i := range samples {
		s := &samples[i]
		w, ok := seen[s.Subject]
		if !ok {
			w = viewed{subject: s.Subject, shift: int64(deid.ShiftDays(v.key, s.Subject, max)) * dayMillis}
			if s.Subject != "" {
				typ, id, _ := cut(s.Subject, '/')
				w.subject = typ + "/" + deid.Pseudonym(v.key, typ, id)
			}
			seen[s.Subject] = w
		}
		s.Subject = w.subject
		if s.Date != storage.MinDate {
			s.Date += w.shift
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
		// $stats also reads the code's values from components.
		"component": []any{map[string]any{"code": map[string]any{"coding": []any{coding}},
			"valueQuantity": map[string]any{"value": json.Number(probeValue), "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}},
	}
	out, _, err := v.f.deid.Apply(res, v.key)
	if err != nil {
		return false, fmt.Errorf("research: probing the rules for $stats: %w", err)
	}
	q, _ := out["valueQuantity"].(map[string]any)
	if q == nil || fmt.Sprint(q["value"]) != probeValue || q["code"] != "mm[Hg]" || q["system"] != "http://unitsofmeasure.org" {
		return false, nil
	}
	comps, _ := out["component"].([]any)
	if len(comps) != 1 {
		return false, nil
	}
	cq, _ := comps[0].(map[string]any)["valueQuantity"].(map[string]any)
	if cq == nil || fmt.Sprint(cq["value"]) != probeValue || cq["code"] != "mm[Hg]" || cq["system"] != "http://unitsofmeasure.org" {
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
	// One process decides one release at a time (fewer lost swaps).
	v.f.cellsMu.Lock()
	defer v.f.cellsMu.Unlock()
	for i, c := range cells {
		rc := releasedCell{Subjects: c.Subjects, All: c.Subjects == nil, Start: c.Start, End: c.End}
		ok, err := v.release(ctx, cellsPrefix+v.project+"/"+hashCell(c.Code, c.Unit), rc, universe[i], k)
		if err != nil {
			return nil, err
		}
		out[i] = ok
	}
	return out, nil
}

// release decides one cell against the project's released cells of its
// code and unit and records it when released. The record is replaced by
// compare-and-swap, so replicas deciding at once cannot both release
// cells that are safe only one at a time: the loser decides again
// against the winner's record.
func (v *view) release(ctx context.Context, key string, rc releasedCell, universe []storage.Sample, k int) (bool, error) {
	for range 20 {
		old, err := v.f.kv.Get(ctx, key)
		if errors.Is(err, storage.ErrNotFound) {
			old, err = nil, nil
		}
		if err != nil {
			return false, fmt.Errorf("research: reading released cells: %w", err)
		}
		var released []releasedCell
		if old != nil {
			if err := json.Unmarshal(old, &released); err != nil {
				return false, fmt.Errorf("research: released cells are damaged: %w", err)
			}
		}
		if slices.ContainsFunc(released, rc.same) {
			return true, nil
		}
		if len(released) >= maxReleased {
			return false, nil
		}
		candidate := append(slices.Clip(released), rc)
		if !atomsSafe(candidate, universe, k) {
			return false, nil
		}
		raw, err := json.Marshal(candidate)
		if err != nil {
			return false, fmt.Errorf("research: encoding released cells: %w", err)
		}
		var stored bool
		if old == nil {
			stored, err = v.f.kv.PutIfAbsent(ctx, key, raw, 0)
		} else {
			stored, err = v.f.kv.CompareAndSwap(ctx, key, old, raw, 0)
		}
		if err != nil {
			return false, fmt.Errorf("research: recording a released cell: %w", err)
		}
		if stored {
			return true, nil
		}
	}
	return false, errors.New("research: the released cells of a project changed 20 times while deciding one")
}

func hashCell(code, unit string) string {
	h := sha256.Sum256([]byte(code + "\x00" + unit))
	return hex.EncodeToString(h[:12])
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
