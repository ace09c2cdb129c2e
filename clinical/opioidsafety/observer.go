package opioidsafety

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/anodyne-fhir/anodyne/clinical/opioid"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Observer is the fhir.CommitObserver of opioid safety. On every change
// of a MedicationRequest it records the request's MME/day and the
// patient's total on the request (ExtensionURL), and creates, updates or
// resolves the patient's DetectedIssues (IssueIDs) in the same Commit.
//
// The total is read from the store as it was before the Commit, with the
// set's own writes laid over it. Two Commits for one patient that run at
// the same moment each see the store without the other; when both change
// an issue, the issue's compare-and-set refuses one of them and the fhir
// server observes that Commit again over the winner's state (the caller
// never sees it). Two changes that each alone leave the issues alone do
// not conflict: they can leave a recorded patientTotal one change behind,
// or an issue they raise only together unraised, until the patient's next
// MedicationRequest change.
type Observer struct {
	table *opioid.Table
	log   *slog.Logger
}

// NewObserver returns the observer over a loaded table.
func NewObserver(t *opioid.Table, log *slog.Logger) *Observer {
	if log == nil {
		log = slog.Default()
	}
	return &Observer{table: t, log: log}
}

// change is one MedicationRequest written in the set.
type change struct {
	index int
	ref   string
	res   map[string]any // nil: deleted
}

// ObserveCommit implements fhir.CommitObserver.
func (o *Observer) ObserveCommit(ctx context.Context, cs *fhir.CommitSet) error {
	var changes []change
	meds := map[string]map[string]any{} // Medications written in the set (nil: deleted)
	var patients []string
	addPatient := func(p string) {
		if p != "" && !slices.Contains(patients, p) {
			patients = append(patients, p)
		}
	}
	for i := 0; i < cs.Len(); i++ {
		w := cs.Write(i)
		if w.Type != "MedicationRequest" && w.Type != "Medication" {
			continue
		}
		var res map[string]any
		if !w.Deleted {
			var err error
			if res, err = decode(w.JSON); err != nil {
				return fmt.Errorf("opioid safety: %s/%s: %w", w.Type, w.ID, err)
			}
		}
		ref := w.Type + "/" + w.ID
		if w.Type == "Medication" {
			meds[ref] = res
			continue
		}
		changes = append(changes, change{index: i, ref: ref, res: res})
		addPatient(patientOf(res))
		// A delete, or an update that moves the request to another
		// patient, changes the total of the patient it was for.
		if w.ExpectVersion > 0 {
			prev, err := o.current(ctx, cs.Backend(), w.Type, w.ID)
			if err != nil {
				return err
			}
			addPatient(patientOf(prev))
		}
	}
	if len(changes) == 0 {
		return nil
	}
	resolve := func(ref string) (map[string]any, error) {
		if m, ok := meds[ref]; ok {
			return m, nil
		}
		typ, id, ok := cutRef(ref)
		if !ok || typ != "Medication" {
			return nil, nil
		}
		return o.current(ctx, cs.Backend(), typ, id)
	}
	results := map[string]opioid.Result{}
	compute := func(ref string, res map[string]any) opioid.Result {
		r, ok := results[ref]
		if !ok {
			r = o.table.Compute(res, resolve)
			results[ref] = r
		}
		return r
	}
	totals := map[string]float64{}
	for _, p := range patients {
		active, err := o.activeRequests(ctx, cs.Backend(), p, changes)
		if err != nil {
			return err
		}
		var reqs []opioid.Request
		for _, ref := range sortedKeys(active) {
			reqs = append(reqs, opioid.Request{Ref: ref, Result: compute(ref, active[ref])})
		}
		s := opioid.Summarize(reqs)
		totals[p] = s.MME
		if err := o.issues(ctx, cs, p, s, changes); err != nil {
			return err
		}
	}
	for _, c := range changes {
		if c.res == nil {
			continue
		}
		if err := cs.Replace(c.index, annotate(c.res, compute(c.ref, c.res), totals[patientOf(c.res)])); err != nil {
			return fmt.Errorf("opioid safety: recording MME on %s: %w", c.ref, err)
		}
	}
	return nil
}

// activeRequests is the patient's active MedicationRequests once the
// set's changes are applied.
func (o *Observer) activeRequests(ctx context.Context, b storage.Backend, patient string, changes []change) (map[string]map[string]any, error) {
	out := map[string]map[string]any{}
	q := storage.Query{Types: []string{"MedicationRequest"}, Count: 500, Filter: storage.And{Exprs: []storage.Expr{
		storage.Match{Param: "subject", Kind: storage.KindReference, Cond: storage.And{Exprs: []storage.Expr{
			storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: "Patient"},
			storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: patient},
		}}},
		storage.Match{Param: "status", Kind: storage.KindToken, Cond: storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: "active"}},
	}}}
	for {
		page, err := b.Search(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("opioid safety: reading the MedicationRequests of Patient/%s: %w", patient, err)
		}
		for _, rec := range page.Records {
			res, err := decode(rec.JSON)
			if err != nil {
				return nil, fmt.Errorf("opioid safety: MedicationRequest/%s: %w", rec.ID, err)
			}
			out["MedicationRequest/"+rec.ID] = res
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	for _, c := range changes {
		if c.res != nil && patientOf(c.res) == patient && opioid.Active(c.res) {
			out[c.ref] = c.res
		} else {
			delete(out, c.ref)
		}
	}
	return out, nil
}

// issues brings the patient's two DetectedIssues in line with s.
func (o *Observer) issues(ctx context.Context, cs *fhir.CommitSet, patient string, s opioid.Summary, changes []change) error {
	mmeID, benzoID := IssueIDs(patient)
	at := cs.At()
	for _, x := range []struct {
		id   string
		want map[string]any
		why  string
	}{
		{mmeID, mmeIssue(mmeID, patient, s, at), fmt.Sprintf("the patient's active opioid total is now %s MME/day, below %v MME/day.", opioid.Format(s.MME), opioid.Reassess)},
		{benzoID, benzoIssue(benzoID, patient, s, at), "no active opioid overlaps an active benzodiazepine any more."},
	} {
		rec, err := cs.Backend().Read(ctx, "DetectedIssue", x.id)
		var prev map[string]any
		switch {
		case errors.Is(err, storage.ErrNotFound):
		case err != nil:
			return fmt.Errorf("opioid safety: reading DetectedIssue/%s: %w", x.id, err)
		case !rec.Deleted:
			if prev, err = decode(rec.JSON); err != nil {
				return fmt.Errorf("opioid safety: DetectedIssue/%s: %w", x.id, err)
			}
		}
		var next map[string]any
		switch {
		case x.want != nil && (prev == nil || !same(prev, x.want)):
			next = x.want
		case x.want == nil && prev != nil && (prev["status"] == statusActive):
			next = resolved(prev, x.why, allGone(prev, changes), at)
		}
		if next == nil {
			continue
		}
		if err := cs.Put(next, rec.VersionID); err != nil {
			return fmt.Errorf("opioid safety: writing DetectedIssue/%s: %w", x.id, err)
		}
	}
	return nil
}

// allGone reports whether every request an issue implicated is deleted
// or entered-in-error in this set: the issue was never real.
func allGone(prev map[string]any, changes []change) bool {
	list, _ := prev["implicated"].([]any)
	if len(list) == 0 {
		return false
	}
	for _, raw := range list {
		m, _ := raw.(map[string]any)
		ref, _ := m["reference"].(string)
		i := slices.IndexFunc(changes, func(c change) bool { return c.ref == ref })
		if i < 0 {
			return false
		}
		if res := changes[i].res; res != nil && res["status"] != "entered-in-error" {
			return false
		}
	}
	return true
}

// same compares two issues leaving out meta and the identification time,
// so that an unchanged picture writes no new version.
func same(a, b map[string]any) bool {
	strip := func(m map[string]any) []byte {
		c := map[string]any{}
		for k, v := range m {
			if k != "meta" && k != "identifiedDateTime" {
				c[k] = v
			}
		}
		raw, _ := json.Marshal(c)
		return raw
	}
	return bytes.Equal(strip(a), strip(b))
}

// current is the current content of a resource, nil when absent or deleted.
func (o *Observer) current(ctx context.Context, b storage.Backend, typ, id string) (map[string]any, error) {
	rec, err := b.Read(ctx, typ, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opioid safety: reading %s/%s: %w", typ, id, err)
	}
	if rec.Deleted {
		return nil, nil
	}
	return decode(rec.JSON)
}

func decode(raw []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	return m, nil
}

func cutRef(ref string) (string, string, bool) {
	for i := 0; i < len(ref); i++ {
		if ref[i] == '/' {
			return ref[:i], ref[i+1:], i > 0 && i < len(ref)-1
		}
	}
	return "", "", false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

var _ fhir.CommitObserver = (*Observer)(nil)
