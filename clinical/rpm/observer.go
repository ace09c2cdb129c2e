package rpm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Observer is the fhir.CommitObserver of remote monitoring. For every
// Observation write of a measure it sets interpretation and
// referenceRange (unless the sender did), then re-evaluates the rule of
// each (patient, measure) the set touches and writes the Flag and
// DetectedIssue that follow, all into the Commit of the readings.
type Observer struct {
	th  *Thresholds
	log *slog.Logger
}

// NewObserver builds the observer over thresholds (Defaults() for the
// embedded file); log may be nil.
func NewObserver(th *Thresholds, log *slog.Logger) *Observer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Observer{th: th, log: log}
}

// NewDefaultObserver is NewObserver over the embedded thresholds.
func NewDefaultObserver(log *slog.Logger) (*Observer, error) {
	th, err := Defaults()
	if err != nil {
		return nil, err
	}
	return NewObserver(th, log), nil
}

var _ fhir.CommitObserver = (*Observer)(nil)

// pair is one patient's series of one measure.
type pair struct {
	patient string
	measure *Measure
}

// ObserveCommit implements fhir.CommitObserver.
func (o *Observer) ObserveCommit(ctx context.Context, cs *fhir.CommitSet) error {
	v := newView(cs)
	var touched []pair
	add := func(patient string, parts []Part) {
		for _, p := range parts {
			pr := pair{patient, p.Measure}
			if patient != "" && !slices.Contains(touched, pr) {
				touched = append(touched, pr)
			}
		}
	}
	limits := map[string]map[string]Limits{} // patient -> measure key -> limits
	n := cs.Len()
	for i := 0; i < n; i++ {
		w := cs.Write(i)
		if w.Type != "Observation" {
			continue
		}
		if w.ExpectVersion > 0 {
			// The version replaced may belong to another patient or
			// measure, whose series loses a reading.
			old, ok, err := v.stored(ctx, "Observation", w.ID)
			if err != nil {
				return err
			}
			if ok && old.res != nil {
				add(SubjectPatient(old.res), o.th.Parts(old.res))
			}
		}
		if w.Deleted {
			continue
		}
		obs, err := decodeResource(w.JSON)
		if err != nil {
			return fmt.Errorf("decoding Observation/%s: %w", w.ID, err)
		}
		parts := o.th.Parts(obs)
		if len(parts) == 0 {
			continue
		}
		patient := SubjectPatient(obs)
		lim, err := o.patientLimits(ctx, v, patient, limits)
		if err != nil {
			return err
		}
		changed := Enrich(obs, parts, func(m *Measure) Limits {
			if l, ok := lim[m.Key]; ok {
				return l
			}
			return m.Defaults()
		})
		if changed {
			if err := cs.Replace(i, obs); err != nil {
				return fmt.Errorf("enriching Observation/%s: %w", w.ID, err)
			}
		}
		add(patient, parts)
	}
	for _, pr := range touched {
		// One patient's Commits evaluate one at a time, so that readings
		// uploaded together are seen together by the rule.
		if err := cs.Serialize(ctx, "rpm/Patient/"+pr.patient); err != nil {
			return err
		}
		if err := o.evaluate(ctx, v, pr); err != nil {
			return fmt.Errorf("rpm %s of Patient/%s: %w", pr.measure.Key, pr.patient, err)
		}
	}
	return nil
}

// patientLimits finds the overrides of a patient once per Commit: the
// active Goals listed by the patient's active CarePlans.
func (o *Observer) patientLimits(ctx context.Context, v *view, patient string, cache map[string]map[string]Limits) (map[string]Limits, error) {
	if patient == "" {
		return nil, nil
	}
	if l, ok := cache[patient]; ok {
		return l, nil
	}
	var goalIDs []string
	q := storage.Query{Types: []string{"CarePlan"}, Count: 50, Filter: storage.And{Exprs: []storage.Expr{
		refTo("subject", "Patient", patient), codeIn("status", "", []string{"active"}),
	}}}
	err := v.search(ctx, q, 4, func(d doc) bool {
		if d.res == nil || SubjectPatient(d.res) != patient || d.res["status"] != "active" {
			return true // a pending version that no longer qualifies
		}
		goals, _ := d.res["goal"].([]any)
		for _, g := range goals {
			ref, _ := asMap(g)["reference"].(string)
			if id, ok := strings.CutPrefix(ref, "Goal/"); ok && !slices.Contains(goalIDs, id) {
				goalIDs = append(goalIDs, id)
			}
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	cands := map[string][]goalCandidate{}
	for _, id := range goalIDs {
		g, ok, err := v.read(ctx, "Goal", id)
		if err != nil {
			return nil, err
		}
		if !ok || g.res == nil || SubjectPatient(g.res) != patient || g.res["lifecycleStatus"] != "active" {
			continue
		}
		updated, _ := asMap(g.res["meta"])["lastUpdated"].(string)
		for _, m := range o.th.measures {
			if l, ok := GoalLimits(m, g.res, id); ok {
				cands[m.Key] = append(cands[m.Key], goalCandidate{limits: l, updated: updated, id: id})
			}
		}
	}
	out := map[string]Limits{}
	for key, c := range cands {
		out[key], _ = pickGoal(c)
	}
	cache[patient] = out
	return out, nil
}

// readings collects the readings of a pair that can matter to its rule:
// the set's own, and the stored ones newest first by the date index,
// from the window before the earliest of the set's (the latest reading
// is at least as late, so its window starts no earlier) until the window
// is covered and, for a count rule, n stored readings are in hand.
func (o *Observer) readings(ctx context.Context, v *view, pr pair) ([]Reading, error) {
	m := pr.measure
	var out []Reading
	var from time.Time
	for i := 0; i < v.cs.Len(); i++ {
		w := v.cs.Write(i)
		if w.Type != "Observation" || w.Deleted || v.pending[w.Type+"/"+w.ID] != i {
			continue
		}
		d, err := docOf(w.Record)
		if err != nil {
			return nil, err
		}
		if SubjectPatient(d.res) != pr.patient {
			continue
		}
		if r, ok := o.th.ReadingOf(d.ref, d.res, m); ok {
			out = append(out, r)
			if since := m.Rule.Since(r.Effective); from.IsZero() || since.Before(from) {
				from = since
			}
		}
	}
	codes := storage.Or{Exprs: []storage.Expr{codeIn("code", LOINC, m.Codes), codeIn("component-code", LOINC, m.Codes)}}
	filter := []storage.Expr{refTo("subject", "Patient", pr.patient), codes, codeIn("status", "", countedStatus)}
	if !from.IsZero() {
		filter = append(filter, storage.Match{Param: "date", Kind: storage.KindDate,
			Cond: storage.Cmp{Field: storage.FieldHigh, Op: storage.OpGe, Value: from.UnixMilli()}})
	}
	page := 50
	if m.Rule.Kind == RuleCount {
		page = m.Rule.N + 2
	}
	q := storage.Query{
		Types: []string{"Observation"}, Count: page,
		Sort:   []storage.Sort{{Param: "date", Kind: storage.KindDate, Desc: true}},
		Filter: storage.And{Exprs: filter},
	}
	var latest time.Time
	var stored []Reading
	err := v.search(ctx, q, 40, func(d doc) bool {
		if _, mine := v.pending[d.ref]; mine {
			return true // collected above
		}
		if d.res == nil || SubjectPatient(d.res) != pr.patient {
			return true
		}
		r, ok := o.th.ReadingOf(d.ref, d.res, m)
		if !ok {
			return true
		}
		if r.Effective.After(latest) {
			latest = r.Effective
		}
		stored = append(stored, r)
		// Newest first: a reading older than the window of the latest one
		// cannot matter, nor (count rule) one strictly older than the n-th.
		if r.Effective.Before(m.Rule.Since(latest)) {
			return false
		}
		return m.Rule.Kind == RuleRise || len(stored) <= m.Rule.N || !r.Effective.Before(stored[m.Rule.N-1].Effective)
	})
	return append(out, stored...), err
}

// evaluate applies the rule to a pair and writes the Flag and the
// DetectedIssue that follow from it, when they change.
func (o *Observer) evaluate(ctx context.Context, v *view, pr pair) error {
	rs, err := o.readings(ctx, v, pr)
	if err != nil {
		return err
	}
	res := pr.measure.Rule.Evaluate(rs)
	id := AlertID(pr.measure, pr.patient)
	flag, ok, err := v.stored(ctx, "Flag", id)
	if err != nil {
		return err
	}
	var cur map[string]any
	if ok {
		cur = flag.res
	}
	if want := FlagFor(pr.measure, pr.patient, res, cur); want != nil && !sameContent(want, cur) {
		if err := v.cs.Put(want, flag.version); err != nil {
			return err
		}
	}
	// A DetectedIssue is opened only with an active Flag and closed no
	// later than the Flag: without a critical breach and without an
	// active Flag there is none open to close.
	if !res.Critical && (cur == nil || cur["status"] != "active") {
		return nil
	}
	di, ok, err := v.stored(ctx, "DetectedIssue", id)
	if err != nil {
		return err
	}
	cur = nil
	if ok {
		cur = di.res
	}
	if want := DetectedIssueFor(pr.measure, pr.patient, res, cur); want != nil && !sameContent(want, cur) {
		if err := v.cs.Put(want, di.version); err != nil {
			return err
		}
	}
	return nil
}

// AlertID is the id of the Flag and of the DetectedIssue of one
// patient's measure: the same pair always lands on the same resources,
// so that alerts are updated, never duplicated; each episode is a
// version in their history.
func AlertID(m *Measure, patient string) string {
	h := sha256.Sum256([]byte("Patient/" + patient))
	return "rpm-" + m.Key + "-" + hex.EncodeToString(h[:8])
}
