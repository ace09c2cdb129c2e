package fhir

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Observation $stats (R4 OperationDefinition Observation-stats, with the
// population and cohort extensions of our own definition): statistics of
// the valueQuantity of the Observations the caller may search, one
// statistics Observation per code and unit.
//
// A caller without a View is answered from storage.Aggregator.Summarize
// (SQL on SQLite). A caller with a View (research) is answered from
// samples in the View's terms: the index rows rewritten by the View
// (StatsView.Samples) or, when it cannot, the samples of the resources it
// emits. The period is then applied on the View's timeline (shifted
// dates), and the View decides which cells it releases (StatsView.Release,
// small-cell suppression).

//go:embed operations/observation-stats.json
var statsDefinitionJSON []byte

const (
	statsSystem       = "http://hl7.org/fhir/observation-statistics"
	dataAbsentSystem  = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
	maxStatsRecords   = 200000 // the de-identified path reads at most this many resources
	defaultStatsLimit = 100
	maxStatsLimit     = 1000
)

// statistic is one supported code of observation-statistics.
type statistic struct {
	code, display string
	quantile      float64 // >= 0: a quantile; -1: computed from the summary
}

var statistics = []statistic{
	{"average", "Average", -1}, {"maximum", "Maximum", -1}, {"minimum", "Minimum", -1}, {"count", "Count", -1},
	{"median", "Median", 0.5}, {"std-dev", "Standard Deviation", -1}, {"sum", "Sum", -1}, {"variance", "Variance", -1},
	{"20-percent", "20th Percentile", 0.2}, {"80-percent", "80th Percentile", 0.8},
	{"4-lower", "Lower Quartile", 0.25}, {"4-upper", "Upper Quartile", 0.75}, {"4-dev", "Quartile Deviation", -1},
	{"5-1", "1st Quintile", 0.2}, {"5-2", "2nd Quintile", 0.4}, {"5-3", "3rd Quintile", 0.6}, {"5-4", "4th Quintile", 0.8},
}

// statsQuantiles are the quantiles every summary carries (4-dev needs
// the quartiles).
var statsQuantiles = []float64{0.2, 0.25, 0.4, 0.5, 0.6, 0.75, 0.8}

// StatsCell is one statistics Observation of a $stats answer, as a
// StatsView sees it when deciding whether to release it.
type StatsCell struct {
	Code string // "system|code" of Observation.code
	Unit string // "system|code" of the values
	// Subjects restricts the cell to these subjects (the View's
	// references); nil means every patient the caller may see.
	Subjects []string
	// Start and End bound the period on the View's timeline (Unix ms,
	// inclusive); storage.MinDate and storage.MaxDate when open.
	Start, End int64
}

// A StatsView is a View that also governs aggregate answers. A View that
// is not one gets its samples from the resources it emits and no
// suppression.
type StatsView interface {
	View
	// Samples rewrites, in place, samples read from the index of
	// Observations with the given code into the View's terms (Subject,
	// Date) exactly as Resource would write them, and reports whether it
	// could: false when the View changes what the index holds in another
	// way (a perturbed value), and the server must use the resources.
	Samples(ctx context.Context, code string, samples []storage.Sample) (bool, error)
	// Release reports, per cell, whether its statistics may be shown.
	// universe holds, per cell, every sample of its code and unit the
	// caller may see (View terms), the cell's own included.
	Release(ctx context.Context, cells []StatsCell, universe [][]storage.Sample) ([]bool, error)
}

type statsRequest struct {
	subject  string // as the caller wrote it
	codes    []string
	stats    []statistic
	start    int64
	end      int64
	period   bool
	include  bool
	limit    int
	rawStart string
	rawEnd   string
}

func parseStats(q url.Values, at time.Time) (statsRequest, error) {
	r := statsRequest{start: storage.MinDate, end: storage.MaxDate, limit: defaultStatsLimit}
	known := map[string]bool{"subject": true, "patient": true, "code": true, "system": true, "coding": true, "duration": true,
		"period": true, "statistic": true, "include": true, "limit": true, "_format": true, "_pretty": true}
	for k := range q {
		if !known[k] {
			return r, errBadRequest("$stats has no parameter %q", k)
		}
	}
	one := func(name string) (string, error) {
		if len(q[name]) > 1 {
			return "", errBadRequest("$stats: %s may be given once", name)
		}
		return strings.TrimSpace(q.Get(name)), nil
	}
	subject, err := one("subject")
	if err != nil {
		return r, err
	}
	patient, err := one("patient")
	if err != nil {
		return r, err
	}
	if subject != "" && patient != "" {
		return r, errBadRequest("$stats: give subject or patient, not both")
	}
	r.subject = subject + patient
	system, err := one("system")
	if err != nil {
		return r, err
	}
	for _, v := range q["code"] {
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); c == "" {
				return r, errBadRequest("$stats: an empty code")
			}
			r.codes = append(r.codes, system+"|"+c)
		}
	}
	if system != "" && len(r.codes) == 0 {
		return r, errBadRequest("$stats: system without code")
	}
	for _, v := range q["coding"] {
		for _, c := range strings.Split(v, ",") {
			sys, code, ok := strings.Cut(strings.TrimSpace(c), "|")
			if !ok || code == "" {
				return r, errBadRequest("$stats: coding %q is not system|code", c)
			}
			r.codes = append(r.codes, sys+"|"+code)
		}
	}
	if len(r.codes) == 0 {
		return r, errBadRequest("$stats needs code (with system) or coding")
	}
	r.codes = slices.Compact(r.codes)
	seen := map[string]bool{}
	for _, v := range q["statistic"] {
		for _, c := range strings.Split(v, ",") {
			c = strings.TrimSpace(c)
			i := slices.IndexFunc(statistics, func(s statistic) bool { return s.code == c })
			if i < 0 {
				return r, errBadRequest("$stats: statistic %q is not one this server computes (%s)", c, statisticCodes())
			}
			if !seen[c] {
				seen[c] = true
				r.stats = append(r.stats, statistics[i])
			}
		}
	}
	if len(r.stats) == 0 {
		return r, errBadRequest("$stats needs at least one statistic (%s)", statisticCodes())
	}
	duration, err := one("duration")
	if err != nil {
		return r, err
	}
	period, err := one("period")
	if err != nil {
		return r, err
	}
	switch {
	case duration != "" && period != "":
		return r, errBadRequest("$stats: give duration or period, not both")
	case duration != "":
		h, err := strconv.ParseFloat(duration, 64)
		if err != nil || h <= 0 || math.IsInf(h, 0) || h > 24*365*200 {
			return r, errBadRequest("$stats: duration %q is not a positive number of hours", duration)
		}
		r.period, r.end = true, at.UnixMilli()
		r.start = r.end - int64(h*float64(time.Hour/time.Millisecond))
		r.rawStart, r.rawEnd = time.UnixMilli(r.start).UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339)
	case period != "":
		startText, endText, ok := strings.Cut(period, "/")
		if !ok || (startText == "" && endText == "") {
			return r, errBadRequest("$stats: period %q is not START/END", period)
		}
		r.period, r.rawStart, r.rawEnd = true, startText, endText
		if startText != "" {
			if r.start, _, err = resources.DateRange(startText); err != nil {
				return r, errBadRequest("$stats: period start %q is not a FHIR dateTime", startText)
			}
		}
		if endText != "" {
			if _, r.end, err = resources.DateRange(endText); err != nil {
				return r, errBadRequest("$stats: period end %q is not a FHIR dateTime", endText)
			}
		}
		if r.start > r.end {
			return r, errBadRequest("$stats: period %q ends before it starts", period)
		}
	}
	switch inc, _ := one("include"); inc {
	case "", "false":
	case "true":
		r.include = true
	default:
		return r, errBadRequest("$stats: include %q is not true or false", inc)
	}
	if l, _ := one("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			return r, errBadRequest("$stats: limit %q is not a positive integer", l)
		}
		r.limit = min(n, maxStatsLimit)
	}
	return r, nil
}

func statisticCodes() string {
	codes := make([]string, len(statistics))
	for i, s := range statistics {
		codes[i] = s.code
	}
	return strings.Join(codes, ", ")
}

// cohort is the subjects a request restricts to, in stored references;
// nil means no restriction.
type cohort []string

// statsCohort resolves subject/patient: one patient or a Group's active
// members, named in the caller's terms and read inside its grant.
func (s *Server) statsCohort(ctx context.Context, v View, spoken string) (cohort, error) {
	if spoken == "" {
		return nil, nil
	}
	typ, id, ok := strings.Cut(tailRef(spoken), "/")
	if !ok || !ValidID(id) || (typ != "Patient" && typ != "Group") {
		return nil, errBadRequest("$stats: subject %q is not Patient/id or Group/id", spoken)
	}
	if typ == "Patient" {
		stored, err := viewSearch(ctx, v, []string{"Observation"}, url.Values{"subject": {"Patient/" + id}})
		if err != nil {
			return nil, err
		}
		return cohort{tailRef(stored.Get("subject"))}, nil
	}
	d, err := s.decide(ctx, ActionAggregate, "Group")
	if err != nil {
		return nil, err
	}
	real, err := s.storedID(ctx, v, "Group", id)
	if err != nil {
		return nil, err
	}
	rec, err := s.backend.Read(ctx, "Group", real)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && rec.Deleted) {
		return nil, errNotFound("Group/%s is not known", id)
	}
	if err != nil {
		return nil, fmt.Errorf("reading Group/%s: %w", id, err)
	}
	res, err := decodeRecord(rec)
	if err != nil {
		return nil, err
	}
	if err := s.within(d, ActionAggregate, "Group", real, res); err != nil {
		return nil, err
	}
	members := cohort{}
	ms, _ := res["member"].([]any)
	for _, m := range ms {
		mm, _ := m.(map[string]any)
		if inactive, _ := mm["inactive"].(bool); inactive {
			continue
		}
		ent, _ := mm["entity"].(map[string]any)
		if ref, _ := ent["reference"].(string); strings.HasPrefix(tailRef(ref), "Patient/") {
			members = append(members, tailRef(ref))
		}
	}
	slices.Sort(members)
	return slices.Compact(members), nil
}

// tailRef is the Type/id of a relative or absolute reference.
func tailRef(ref string) string {
	parts := strings.Split(strings.TrimSpace(ref), "/")
	if len(parts) < 2 {
		return strings.TrimSpace(ref)
	}
	return parts[len(parts)-2] + "/" + parts[len(parts)-1]
}

// statsCell is one (code, unit) result.
type statsCell struct {
	code    string
	summary storage.Summary
	// View path only: the cell's samples and every sample of its code and
	// unit the caller may see.
	samples, universe []storage.Sample
	cell              StatsCell
	shown             bool
}

// Stats is the $stats interaction over the parameters in r.Query, as
// the REST handler and a batch or transaction GET entry run it.
func (s *Server) Stats(ctx context.Context, r ReadRequest) (ReadResult, error) {
	p, err := s.statsParameters(ctx, r.Query)
	if err != nil {
		return ReadResult{}, err
	}
	return resourceResult(p)
}

// statsParameters answers $stats with its Parameters resource.
func (s *Server) statsParameters(ctx context.Context, query url.Values) (map[string]any, error) {
	req, err := parseStats(query, time.Now())
	if err != nil {
		return nil, err
	}
	d, err := s.decide(ctx, ActionAggregate, "Observation")
	if err != nil {
		return nil, err
	}
	if req.include {
		// Source rows need the right to search, which an aggregates-only
		// client has not.
		if _, err := s.decide(ctx, ActionSearch, "Observation"); err != nil {
			return nil, err
		}
	}
	v, err := s.view(ctx)
	if err != nil {
		return nil, err
	}
	members, err := s.statsCohort(ctx, v, req.subject)
	if err != nil {
		return nil, err
	}
	base := []storage.Expr{}
	if d.Filter != nil {
		base = append(base, d.Filter)
	}
	notError, err := s.registry.Compile("Observation", "status", "not", []string{"entered-in-error"})
	if err != nil {
		return nil, fmt.Errorf("$stats: %w", err)
	}
	base = append(base, notError)

	var (
		cells   []*statsCell
		sources []string // stored ids, newest first per code
	)
	for _, code := range req.codes {
		sel, err := s.statsSelection(code)
		if err != nil {
			return nil, err
		}
		filter := slices.Clip(base)
		var got []*statsCell
		var ids []string
		if v == nil {
			got, ids, err = s.statsStored(ctx, code, sel, filter, members, req)
		} else {
			got, ids, err = s.statsViewed(ctx, v, code, sel, filter, members, req)
		}
		if err != nil {
			return nil, err
		}
		cells = append(cells, got...)
		sources = append(sources, ids...)
	}
	if sv, ok := v.(StatsView); ok {
		if err := releaseCells(ctx, sv, cells); err != nil {
			return nil, err
		}
	}
	out := []any{}
	for _, cell := range cells {
		out = append(out, map[string]any{"name": "statistics", "resource": statsObservation(req, cell)})
	}
	if req.include {
		for _, id := range sources[:min(len(sources), req.limit)] {
			rec, err := s.backend.Read(ctx, "Observation", id)
			if errors.Is(err, storage.ErrNotFound) || (err == nil && rec.Deleted) {
				continue // deleted since the statistics were read
			}
			if err != nil {
				return nil, fmt.Errorf("$stats: reading a source: %w", err)
			}
			raw, _, err := s.emit(ctx, v, nil, rec)
			if err != nil {
				return nil, err
			}
			out = append(out, map[string]any{"name": "source", "resource": json.RawMessage(raw)})
		}
	}
	return map[string]any{"resourceType": "Parameters", "parameter": out}, nil
}

// statsStored answers a caller without a View from the database.
func (s *Server) statsStored(ctx context.Context, code string, sel statsSelection, filter []storage.Expr, members cohort, req statsRequest) ([]*statsCell, []string, error) {
	if members != nil {
		e, err := s.registry.Compile("Observation", "patient", "", []string{strings.Join(append(cohort{"Patient/" + noSuchID}, members...), ",")})
		if err != nil {
			return nil, nil, fmt.Errorf("$stats cohort: %w", err)
		}
		filter = append(filter, e)
	}
	if req.period {
		filter = append(filter, storage.Match{Param: "date", Kind: storage.KindDate, Cond: storage.And{Exprs: []storage.Expr{
			storage.Cmp{Field: storage.FieldLow, Op: storage.OpGe, Value: req.start},
			storage.Cmp{Field: storage.FieldLow, Op: storage.OpLe, Value: req.end},
		}}})
	}
	// No subject: a caller without a View is shown no distinct-patient
	// count (only suppression needs it), and counting them costs a lookup
	// per value. Date orders the sources of include only.
	q := storage.AggregateQuery{Type: "Observation", Filter: storage.And{Exprs: filter}, Value: "value-quantity", Where: sel.where, Component: sel.component,
		Date: "date", Quantiles: statsQuantiles}
	var (
		sums    []storage.Sample
		summary []storage.Summary
	)
	agg, ok := storage.As[storage.Aggregator](s.backend)
	if ok {
		var err error
		if summary, err = agg.Summarize(ctx, q); err != nil {
			return nil, nil, fmt.Errorf("$stats: %w", err)
		}
		if req.include {
			if sums, err = agg.Samples(ctx, q); err != nil {
				return nil, nil, fmt.Errorf("$stats: %w", err)
			}
		}
	} else {
		samples, _, err := s.viewedSamples(ctx, nil, q, sel.any)
		if err != nil {
			return nil, nil, err
		}
		summary, sums = storage.SummarizeSamples(samples, statsQuantiles), samples
	}
	if len(summary) == 0 {
		summary = []storage.Summary{{}}
	}
	out := make([]*statsCell, len(summary))
	for i, sm := range summary {
		out[i] = &statsCell{code: code, summary: sm, shown: true}
	}
	return out, newestIDs(sums), nil
}

// statsSelection is how the values of one requested code are found: the
// value of Observations with that code, and the value of every component
// with that code (R4 combo semantics: a systolic pressure recorded alone
// or in a blood-pressure panel).
type statsSelection struct {
	where     storage.Expr // Observation.code is the code
	component *storage.ComponentValues
	any       storage.Expr // either: the Observations to read
}

func (s *Server) statsSelection(code string) (statsSelection, error) {
	token := []string{strings.TrimPrefix(code, "|")}
	codeExpr, err := s.registry.Compile("Observation", "code", "", token)
	if err != nil {
		return statsSelection{}, errBadRequest("$stats: code %q: %v", code, err)
	}
	compExpr, err := s.registry.Compile("Observation", "component-code", "", token)
	if err != nil {
		return statsSelection{}, errBadRequest("$stats: code %q: %v", code, err)
	}
	m, ok := compExpr.(storage.Match)
	if !ok {
		return statsSelection{}, fmt.Errorf("$stats: component-code compiles to %T, not a Match", compExpr)
	}
	return statsSelection{
		where: codeExpr,
		// Part 0 of component-code-value-quantity is the component's code,
		// part 1 its quantity (R4 Observation search parameters).
		component: &storage.ComponentValues{Param: "component-code-value-quantity", Cond: storage.Part{Index: 0, Cond: m.Cond}, Part: 1},
		any:       storage.Or{Exprs: []storage.Expr{codeExpr, compExpr}},
	}, nil
}

// newestIDs are the resource ids of samples, newest first, once each.
func newestIDs(samples []storage.Sample) []string {
	sorted := slices.Clone(samples)
	slices.SortStableFunc(sorted, func(a, b storage.Sample) int {
		if a.Date != b.Date {
			if a.Date > b.Date {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	var ids []string
	seen := map[string]bool{}
	for _, sm := range sorted {
		if !seen[sm.ID] {
			seen[sm.ID] = true
			ids = append(ids, sm.ID)
		}
	}
	return ids
}

// noSuchID keeps an empty cohort's reference list non-empty: a valid id
// no resource has.
const noSuchID = "stats-no-member"

// statsViewed answers a caller with a View from samples in its terms:
// cohort and period are applied here, the period on the View's timeline.
func (s *Server) statsViewed(ctx context.Context, v View, code string, sel statsSelection, filter []storage.Expr, members cohort, req statsRequest) ([]*statsCell, []string, error) {
	q := storage.AggregateQuery{Type: "Observation", Filter: storage.And{Exprs: filter}, Value: "value-quantity", Where: sel.where, Component: sel.component,
		Subject: "patient", Date: "date"}
	var (
		samples []storage.Sample
		stored  []string // the stored subject of each sample
		done    bool
	)
	agg, aggOK := storage.As[storage.Aggregator](s.backend)
	if sv, ok := v.(StatsView); ok && aggOK {
		var err error
		if samples, err = agg.Samples(ctx, q); err != nil {
			return nil, nil, fmt.Errorf("$stats: %w", err)
		}
		stored = make([]string, len(samples))
		for i := range samples {
			stored[i] = samples[i].Subject
		}
		if done, err = sv.Samples(ctx, code, samples); err != nil {
			return nil, nil, fmt.Errorf("$stats: %w", err)
		}
	}
	if !done {
		var err error
		if samples, stored, err = s.viewedSamples(ctx, v, q, sel.any); err != nil {
			return nil, nil, err
		}
	}
	in := map[string]bool{}
	for _, m := range members {
		in[m] = true
	}
	viewSubjects := map[string]bool{}
	universe := map[string][]storage.Sample{}
	var selected []storage.Sample
	for i, sm := range samples {
		unit := sm.System + "|" + sm.Code
		universe[unit] = append(universe[unit], sm)
		if members != nil && !in[stored[i]] {
			continue
		}
		if members != nil && sm.Subject != "" {
			viewSubjects[sm.Subject] = true
		}
		if req.period && (sm.Date < req.start || sm.Date > req.end) {
			continue
		}
		selected = append(selected, sm)
	}
	var subjects []string
	if members != nil {
		subjects = make([]string, 0, len(viewSubjects))
		for sub := range viewSubjects {
			subjects = append(subjects, sub)
		}
		slices.Sort(subjects)
	}
	byUnit := map[string][]storage.Sample{}
	for _, sm := range selected {
		byUnit[sm.System+"|"+sm.Code] = append(byUnit[sm.System+"|"+sm.Code], sm)
	}
	sums := storage.SummarizeSamples(selected, statsQuantiles)
	if len(sums) == 0 {
		sums = []storage.Summary{{}}
	}
	out := make([]*statsCell, len(sums))
	for i, sm := range sums {
		unit := sm.System + "|" + sm.Code
		if sm.Count == 0 {
			unit = ""
		}
		out[i] = &statsCell{code: code, summary: sm, samples: byUnit[unit], universe: universe[unit], shown: true,
			cell: StatsCell{Code: code, Unit: unit, Subjects: subjects, Start: req.start, End: req.end}}
	}
	return out, newestIDs(selected), nil
}

// viewedSamples reads the resources q selects, passes each through the
// View (nil: as stored) and takes its samples from the index of what the
// caller would receive. stored holds each sample's stored subject; ids
// stay the stored ones.
func (s *Server) viewedSamples(ctx context.Context, v View, q storage.AggregateQuery, match storage.Expr) (samples []storage.Sample, stored []string, err error) {
	sq := storage.Query{Types: []string{q.Type}, Filter: storage.And{Exprs: []storage.Expr{q.Filter, match}}, Count: 1000}
	// The search applied Filter; the rest is judged per resource.
	each := q
	each.Filter = nil
	read := 0
	for {
		page, err := s.backend.Search(ctx, sq)
		if err != nil {
			return nil, nil, fmt.Errorf("$stats: reading Observations: %w", err)
		}
		for _, rec := range page.Records {
			if read++; read > maxStatsRecords {
				return nil, nil, newError(http.StatusRequestEntityTooLarge, codeTooCostly,
					"$stats: more than %d Observations to read for this caller; narrow the cohort or codes", maxStatsRecords)
			}
			res, err := decodeRecord(rec)
			if err != nil {
				return nil, nil, err
			}
			raw, err := s.registry.Index(q.Type, res)
			if err != nil {
				return nil, nil, fmt.Errorf("$stats: indexing %s/%s: %w", rec.Type, rec.ID, err)
			}
			entries := raw
			if v != nil {
				viewed, err := v.Resource(ctx, res)
				if err != nil {
					return nil, nil, fmt.Errorf("$stats: filtering %s/%s: %w", rec.Type, rec.ID, err)
				}
				if entries, err = s.registry.Index(q.Type, viewed); err != nil {
					return nil, nil, fmt.Errorf("$stats: indexing %s/%s: %w", rec.Type, rec.ID, err)
				}
			}
			storedSubject := entrySubject(raw, q.Subject)
			got, err := storage.SamplesOf(rec.ID, entries, each)
			if err != nil {
				return nil, nil, fmt.Errorf("$stats: samples of %s/%s: %w", rec.Type, rec.ID, err)
			}
			for _, sm := range got {
				samples = append(samples, sm)
				stored = append(stored, storedSubject)
			}
		}
		if page.Next == "" {
			return samples, stored, nil
		}
		sq.Cursor = page.Next
	}
}

func entrySubject(entries []storage.Entry, param string) string {
	best := ""
	for _, e := range entries {
		if e.Param == param && e.Kind == storage.KindReference && e.RefID != "" {
			if ref := e.RefType + "/" + e.RefID; best == "" || ref < best {
				best = ref
			}
		}
	}
	return best
}

// releaseCells asks the View which cells with values it shows.
func releaseCells(ctx context.Context, sv StatsView, cells []*statsCell) error {
	var ask []StatsCell
	var universe [][]storage.Sample
	var which []*statsCell
	for _, c := range cells {
		if c.summary.Count == 0 {
			continue // zero may be shown
		}
		ask = append(ask, c.cell)
		universe = append(universe, c.universe)
		which = append(which, c)
	}
	if len(ask) == 0 {
		return nil
	}
	shown, err := sv.Release(ctx, ask, universe)
	if err != nil {
		return fmt.Errorf("$stats: releasing statistics: %w", err)
	}
	if len(shown) != len(ask) {
		return fmt.Errorf("$stats: the view released %d of %d cells", len(shown), len(ask))
	}
	for i, c := range which {
		c.shown = shown[i]
	}
	return nil
}

// statsObservation is the statistics Observation of one cell.
func statsObservation(req statsRequest, c *statsCell) map[string]any {
	system, code, _ := strings.Cut(c.code, "|")
	coding := map[string]any{"code": code}
	if system != "" {
		coding["system"] = system
	}
	obs := map[string]any{"resourceType": "Observation", "status": "final",
		"code": map[string]any{"coding": []any{coding}}}
	if req.subject != "" {
		obs["subject"] = map[string]any{"reference": tailRef(req.subject)}
	}
	if req.period {
		p := map[string]any{}
		if req.rawStart != "" {
			p["start"] = req.rawStart
		}
		if req.rawEnd != "" {
			p["end"] = req.rawEnd
		}
		obs["effectivePeriod"] = p
	}
	sm := c.summary
	unit := map[string]any{}
	if sm.Code != "" {
		unit["code"], unit["unit"] = sm.Code, sm.Code
	}
	if sm.System != "" {
		unit["system"] = sm.System
	}
	var comps []any
	for _, st := range req.stats {
		comp := map[string]any{"code": map[string]any{"coding": []any{map[string]any{"system": statsSystem, "code": st.code, "display": st.display}}}}
		value, ok, isCount := statValue(st, sm)
		switch {
		case !c.shown:
			comp["dataAbsentReason"] = absent("masked")
		case isCount:
			comp["valueInteger"] = json.Number(strconv.Itoa(sm.Count))
		case !ok:
			comp["dataAbsentReason"] = absent("not-applicable")
		default:
			q := map[string]any{"value": json.Number(strconv.FormatFloat(value, 'g', 12, 64))}
			if st.code != "variance" { // the unit squared has no UCUM code of its own here
				for k, v := range unit {
					q[k] = v
				}
			}
			comp["valueQuantity"] = q
		}
		comps = append(comps, comp)
	}
	obs["component"] = comps
	return obs
}

func absent(code string) map[string]any {
	return map[string]any{"coding": []any{map[string]any{"system": dataAbsentSystem, "code": code}}}
}

// statValue computes one statistic from a summary; ok is false when it is
// undefined (no values; a spread of one value).
func statValue(st statistic, sm storage.Summary) (v float64, ok, isCount bool) {
	if st.code == "count" {
		return 0, true, true
	}
	if sm.Count == 0 {
		return 0, false, false
	}
	if st.quantile >= 0 {
		i := slices.Index(statsQuantiles, st.quantile)
		return sm.Quantiles[i], true, false
	}
	switch st.code {
	case "average":
		return sm.Mean, true, false
	case "maximum":
		return sm.Max, true, false
	case "minimum":
		return sm.Min, true, false
	case "sum":
		return sm.Sum, true, false
	case "variance", "std-dev":
		if sm.Count < 2 {
			return 0, false, false
		}
		variance := sm.SquaredDeviations / float64(sm.Count-1)
		if st.code == "std-dev" {
			return math.Sqrt(variance), true, false
		}
		return variance, true, false
	case "4-dev":
		q1, q3 := sm.Quantiles[slices.Index(statsQuantiles, 0.25)], sm.Quantiles[slices.Index(statsQuantiles, 0.75)]
		return (q3 - q1) / 2, true, false
	}
	return 0, false, false
}

// statsDefinition is our OperationDefinition of $stats, parsed once.
func statsDefinition() (map[string]any, error) {
	var def map[string]any
	if err := json.Unmarshal(statsDefinitionJSON, &def); err != nil {
		return nil, fmt.Errorf("fhir: the embedded $stats OperationDefinition: %w", err)
	}
	return def, nil
}
