package mongo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/anodyne-fhir/anodyne/storage"
)

// storage.Aggregator on MongoDB, in one of two ways decided at Open:
//
//   - In the database (aggPipeline: $elemMatch works and the probe
//     pipeline gave the known answer, MongoDB 5.2 or later): one
//     aggregation whose first branch takes the Value entries of the
//     resources matching Filter and Where and whose $unionWith branch takes
//     the quantity parts of the Component entries satisfying the
//     component's condition. Each branch projects the resource's subject
//     (the lowest reference of Subject) and date (the lowest Low of Date)
//     before unwinding only the entries it needs; Summarize then groups by
//     unit ($sum, $min, $max, $avg, $push, $addToSet), computes the squared
//     deviations ($reduce) and reads the two ranks of each quantile from
//     the sorted values ($sortArray), so that one document per unit comes
//     back. Samples returns the unwound rows.
//   - In Go (FerretDB: no $elemMatch, and its $group has only $sum and
//     $count): one find with the selection's k-key filter, projected to
//     _id and the index entries (never the JSON), each candidate re-checked
//     and reduced to its samples as it streams in (storage.SamplesOf), then
//     storage.SummarizeSamples. Memory holds the samples, not the
//     resources; the scan is FerretDB's full scan either way.

var _ storage.Aggregator = (*Backend)(nil)

// Summarize implements storage.Aggregator.
func (b *Backend) Summarize(ctx context.Context, q storage.AggregateQuery) (_ []storage.Summary, rerr error) {
	defer classify(&rerr)
	if err := checkAggregate(q); err != nil {
		return nil, err
	}
	return isolated(ctx, b, func() ([]storage.Summary, error) {
		if b.aggPipeline {
			pipe, ok, err := b.valuesPipeline(ctx, colResources, q)
			if err != nil {
				return nil, err
			}
			if ok {
				return summarizeInDB(ctx, b.res, pipe, q.Quantiles)
			}
		}
		samples, err := b.samplesInGo(ctx, q)
		if err != nil {
			return nil, err
		}
		return storage.SummarizeSamples(samples, q.Quantiles), nil
	})
}

// Samples implements storage.Aggregator.
func (b *Backend) Samples(ctx context.Context, q storage.AggregateQuery) (_ []storage.Sample, rerr error) {
	defer classify(&rerr)
	if err := checkAggregate(q); err != nil {
		return nil, err
	}
	return isolated(ctx, b, func() ([]storage.Sample, error) {
		if b.aggPipeline {
			pipe, ok, err := b.valuesPipeline(ctx, colResources, q)
			if err != nil {
				return nil, err
			}
			if ok {
				return samplesInDB(ctx, b.res, pipe)
			}
		}
		return b.samplesInGo(ctx, q)
	})
}

func checkAggregate(q storage.AggregateQuery) error {
	if q.Type == "" || q.Value == "" {
		return errors.New("mongo: aggregate: Type and Value are required")
	}
	return nil
}

// componentMatch selects the resources with an entry the component
// selection takes values from.
func componentMatch(c *storage.ComponentValues) storage.Expr {
	return storage.Match{Param: c.Param, Kind: storage.KindComposite, Cond: c.Cond}
}

// samplesInGo reads the candidates' ids and entries and keeps the samples
// of those that match (the reference meaning, storage.SamplesOf).
func (b *Backend) samplesInGo(ctx context.Context, q storage.AggregateQuery) ([]storage.Sample, error) {
	sel := q.Filter
	switch {
	case q.Where != nil && q.Component != nil:
		sel = storage.And{Exprs: []storage.Expr{q.Filter, storage.Or{Exprs: []storage.Expr{q.Where, componentMatch(q.Component)}}}}
	case q.Where != nil:
		sel = storage.And{Exprs: []storage.Expr{q.Filter, q.Where}}
	}
	root, full, exact, err := b.searchFilter(ctx, storage.Query{Types: []string{q.Type}, Filter: sel})
	if err != nil {
		return nil, fmt.Errorf("mongo: aggregate: %w", err)
	}
	// Where is judged per resource (values or components only), so it is
	// resolved (Chain, Has) once for evaluation in Go.
	var where *node
	if q.Where != nil {
		if where, err = b.resolve(ctx, q.Where, 0); err != nil {
			return nil, fmt.Errorf("mongo: aggregate: %w", err)
		}
	}
	cur, err := b.res.Find(ctx, full, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}, {Key: "e", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("mongo: aggregate: %w", err)
	}
	defer cur.Close(ctx)
	var out []storage.Sample
	for cur.Next(ctx) {
		var d resourceDoc
		if err := cur.Decode(&d); err != nil {
			return nil, fmt.Errorf("mongo: aggregate: %w", err)
		}
		c := candidate{key: d.ID, entries: fromEntryDocs(d.Entries)}
		if !exact {
			if ok, err := eval(root, &c); err != nil || !ok {
				if err != nil {
					return nil, fmt.Errorf("mongo: aggregate: %w", err)
				}
				continue
			}
		}
		each := q
		each.Filter, each.Where = nil, nil
		if where != nil {
			ok, err := eval(where, &c)
			if err != nil {
				return nil, fmt.Errorf("mongo: aggregate: %w", err)
			}
			if !ok {
				each.Value = "" // no entry has an empty parameter: components only
			}
		}
		_, id, _ := strings.Cut(d.ID, "/")
		got, err := storage.SamplesOf(id, c.entries, each)
		if err != nil {
			return nil, fmt.Errorf("mongo: aggregate: %w", err)
		}
		out = append(out, got...)
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("mongo: aggregate: %w", err)
	}
	return out, nil
}

// valuesPipeline is the aggregation, on collection coll, whose output is
// one document {i, subj, date, s, c, n} per value of q. ok is false when a
// branch's filter would not be exact (the Go path then answers).
func (b *Backend) valuesPipeline(ctx context.Context, coll string, q storage.AggregateQuery) (bson.A, bool, error) {
	valueSel := q.Filter
	if q.Where != nil {
		valueSel = storage.And{Exprs: []storage.Expr{q.Filter, q.Where}}
	}
	_, full, exact, err := b.searchFilter(ctx, storage.Query{Types: []string{q.Type}, Filter: valueSel})
	if err != nil || !exact {
		return nil, false, err
	}
	pipe := branch(full, q, entryIs(q.Value, storage.KindQuantity))
	pipe = append(pipe, bson.D{{Key: "$project", Value: bson.D{
		{Key: "_id", Value: 0}, {Key: "i", Value: 1}, {Key: "subj", Value: 1}, {Key: "date", Value: 1},
		{Key: "s", Value: "$e.s"}, {Key: "c", Value: "$e.c"}, {Key: "n", Value: "$e.n"},
	}}})
	if c := q.Component; c != nil {
		_, cfull, exact, err := b.searchFilter(ctx, storage.Query{Types: []string{q.Type},
			Filter: storage.And{Exprs: []storage.Expr{q.Filter, componentMatch(c)}}})
		if err != nil || !exact {
			return nil, false, err
		}
		cond, err := entryCond(c.Cond, "e.", storage.KindComposite)
		if err != nil {
			return nil, false, err
		}
		part := fmt.Sprintf("e.parts.%d", c.Part)
		if c.Part < 0 {
			return nil, false, fmt.Errorf("mongo: aggregate: component part %d: %w", c.Part, storage.ErrUnsupported)
		}
		sub := branch(cfull, q, entryIs(c.Param, storage.KindComposite))
		if len(cond) > 0 {
			sub = append(sub, bson.D{{Key: "$match", Value: cond}})
		}
		sub = append(sub,
			bson.D{{Key: "$match", Value: bson.D{{Key: part + ".k", Value: int32(storage.KindQuantity)}}}},
			bson.D{{Key: "$project", Value: bson.D{
				{Key: "_id", Value: 0}, {Key: "i", Value: 1}, {Key: "subj", Value: 1}, {Key: "date", Value: 1},
				{Key: "v", Value: bson.D{{Key: "$arrayElemAt", Value: bson.A{"$e.parts", c.Part}}}},
			}}},
			bson.D{{Key: "$project", Value: bson.D{
				{Key: "i", Value: 1}, {Key: "subj", Value: 1}, {Key: "date", Value: 1},
				{Key: "s", Value: "$v.s"}, {Key: "c", Value: "$v.c"}, {Key: "n", Value: "$v.n"},
			}}})
		pipe = append(pipe, bson.D{{Key: "$unionWith", Value: bson.D{{Key: "coll", Value: coll}, {Key: "pipeline", Value: sub}}}})
	}
	return pipe, true, nil
}

// entryIs is an aggregation condition on the entry $$x: parameter and kind.
func entryIs(param string, kind storage.Kind) bson.D {
	return bson.D{{Key: "$and", Value: bson.A{
		bson.D{{Key: "$eq", Value: bson.A{"$$x.p", param}}},
		bson.D{{Key: "$eq", Value: bson.A{"$$x.k", int32(kind)}}},
	}}}
}

// entries is the aggregation expression of the entries for which cond
// ($$x) holds.
func entries(cond bson.D) bson.D {
	return bson.D{{Key: "$filter", Value: bson.D{{Key: "input", Value: "$e"}, {Key: "as", Value: "x"}, {Key: "cond", Value: cond}}}}
}

// branch matches full, projects each resource's subject and date and the
// entries that take, and unwinds those.
func branch(full bson.D, q storage.AggregateQuery, take bson.D) bson.A {
	refs := entries(bson.D{{Key: "$and", Value: bson.A{
		entryIs(q.Subject, storage.KindReference),
		bson.D{{Key: "$gt", Value: bson.A{bson.D{{Key: "$ifNull", Value: bson.A{"$$x.ri", ""}}}, ""}}},
	}}})
	subject := bson.D{{Key: "$min", Value: bson.D{{Key: "$map", Value: bson.D{{Key: "input", Value: refs}, {Key: "as", Value: "x"},
		{Key: "in", Value: bson.D{{Key: "$concat", Value: bson.A{bson.D{{Key: "$ifNull", Value: bson.A{"$$x.rt", ""}}}, "/", "$$x.ri"}}}}}}}}}
	date := bson.D{{Key: "$ifNull", Value: bson.A{
		bson.D{{Key: "$min", Value: bson.D{{Key: "$map", Value: bson.D{{Key: "input", Value: entries(entryIs(q.Date, storage.KindDate))},
			{Key: "as", Value: "x"}, {Key: "in", Value: "$$x.lo"}}}}}},
		storage.MinDate,
	}}}
	return bson.A{
		bson.D{{Key: "$match", Value: full}},
		bson.D{{Key: "$project", Value: bson.D{{Key: "_id", Value: 0}, {Key: "i", Value: 1}, {Key: "subj", Value: subject}, {Key: "date", Value: date}, {Key: "e", Value: entries(take)}}}},
		bson.D{{Key: "$unwind", Value: "$e"}},
	}
}

// sampleDoc is one output document of valuesPipeline.
type sampleDoc struct {
	ID      string  `bson:"i"`
	Subject *string `bson:"subj"`
	Date    int64   `bson:"date"`
	System  string  `bson:"s"`
	Code    string  `bson:"c"`
	Num     float64 `bson:"n"`
}

func samplesInDB(ctx context.Context, col *mongo.Collection, pipe bson.A) ([]storage.Sample, error) {
	cur, err := col.Aggregate(ctx, pipe, options.Aggregate().SetAllowDiskUse(true))
	if err != nil {
		return nil, fmt.Errorf("mongo: aggregate samples: %w", err)
	}
	defer cur.Close(ctx)
	var out []storage.Sample
	for cur.Next(ctx) {
		var d sampleDoc
		if err := cur.Decode(&d); err != nil {
			return nil, fmt.Errorf("mongo: aggregate samples: %w", err)
		}
		s := storage.Sample{ID: d.ID, System: d.System, Code: d.Code, Num: d.Num, Date: d.Date}
		if d.Subject != nil {
			s.Subject = *d.Subject
		}
		out = append(out, s)
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("mongo: aggregate samples: %w", err)
	}
	return out, nil
}

// summaryDoc is one output document of the Summarize stages.
type summaryDoc struct {
	Unit struct {
		System string `bson:"s"`
		Code   string `bson:"c"`
	} `bson:"_id"`
	Count    int64       `bson:"n"`
	Sum      float64     `bson:"sum"`
	Min      float64     `bson:"min"`
	Max      float64     `bson:"max"`
	Mean     float64     `bson:"mean"`
	Squared  float64     `bson:"sq"`
	Subjects int64       `bson:"subjects"`
	Picks    [][]float64 `bson:"picks"`
}

// summaryStages group the values of valuesPipeline by unit. The two
// values each quantile interpolates between are picked in the database
// at storage.QuantileRanks' ranks, computed there from the unit's count;
// the weight is applied in Go.
func summaryStages(quantiles []float64) bson.A {
	last := bson.D{{Key: "$subtract", Value: bson.A{"$n", 1}}}
	picks := bson.A{}
	for _, f := range quantiles {
		f = math.Min(math.Max(f, 0), 1) // as storage.QuantileRanks clamps
		lo := bson.D{{Key: "$toInt", Value: bson.D{{Key: "$floor", Value: bson.D{{Key: "$multiply", Value: bson.A{last, f}}}}}}}
		hi := bson.D{{Key: "$min", Value: bson.A{bson.D{{Key: "$add", Value: bson.A{lo, 1}}}, last}}}
		picks = append(picks, bson.A{
			bson.D{{Key: "$arrayElemAt", Value: bson.A{"$sorted", lo}}},
			bson.D{{Key: "$arrayElemAt", Value: bson.A{"$sorted", hi}}},
		})
	}
	dev := bson.D{{Key: "$subtract", Value: bson.A{"$$this", "$mean"}}}
	keep := func(extra ...bson.E) bson.D {
		d := bson.D{{Key: "n", Value: 1}, {Key: "sum", Value: 1}, {Key: "min", Value: 1}, {Key: "max", Value: 1}, {Key: "mean", Value: 1}}
		return append(d, extra...)
	}
	return bson.A{
		bson.D{{Key: "$group", Value: bson.D{
			{Key: "_id", Value: bson.D{
				{Key: "s", Value: bson.D{{Key: "$ifNull", Value: bson.A{"$s", ""}}}},
				{Key: "c", Value: bson.D{{Key: "$ifNull", Value: bson.A{"$c", ""}}}},
			}},
			{Key: "n", Value: bson.D{{Key: "$sum", Value: 1}}},
			{Key: "sum", Value: bson.D{{Key: "$sum", Value: "$n"}}},
			{Key: "min", Value: bson.D{{Key: "$min", Value: "$n"}}},
			{Key: "max", Value: bson.D{{Key: "$max", Value: "$n"}}},
			{Key: "mean", Value: bson.D{{Key: "$avg", Value: "$n"}}},
			{Key: "vals", Value: bson.D{{Key: "$push", Value: "$n"}}},
			{Key: "subj", Value: bson.D{{Key: "$addToSet", Value: "$subj"}}},
		}}},
		bson.D{{Key: "$project", Value: keep(
			bson.E{Key: "subjects", Value: bson.D{{Key: "$size", Value: bson.D{{Key: "$setDifference", Value: bson.A{"$subj", bson.A{nil, ""}}}}}}},
			bson.E{Key: "sq", Value: bson.D{{Key: "$reduce", Value: bson.D{{Key: "input", Value: "$vals"}, {Key: "initialValue", Value: 0.0},
				{Key: "in", Value: bson.D{{Key: "$add", Value: bson.A{"$$value", bson.D{{Key: "$multiply", Value: bson.A{dev, dev}}}}}}}}}}},
			bson.E{Key: "sorted", Value: bson.D{{Key: "$sortArray", Value: bson.D{{Key: "input", Value: "$vals"}, {Key: "sortBy", Value: 1}}}}},
		)}},
		bson.D{{Key: "$project", Value: keep(bson.E{Key: "subjects", Value: 1}, bson.E{Key: "sq", Value: 1}, bson.E{Key: "picks", Value: picks})}},
	}
}

func summarizeInDB(ctx context.Context, col *mongo.Collection, pipe bson.A, quantiles []float64) ([]storage.Summary, error) {
	pipe = append(slices.Clone(pipe), summaryStages(quantiles)...)
	cur, err := col.Aggregate(ctx, pipe, options.Aggregate().SetAllowDiskUse(true))
	if err != nil {
		return nil, fmt.Errorf("mongo: aggregate: %w", err)
	}
	var docs []summaryDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("mongo: aggregate: %w", err)
	}
	out := make([]storage.Summary, len(docs))
	for i, d := range docs {
		if len(d.Picks) != len(quantiles) {
			return nil, fmt.Errorf("mongo: aggregate: %d quantile picks for %d quantiles", len(d.Picks), len(quantiles))
		}
		s := storage.Summary{System: d.Unit.System, Code: d.Unit.Code, Count: int(d.Count), Subjects: int(d.Subjects),
			Sum: d.Sum, Min: d.Min, Max: d.Max, Mean: d.Mean, SquaredDeviations: d.Squared}
		for j, f := range quantiles {
			if len(d.Picks[j]) != 2 {
				return nil, fmt.Errorf("mongo: aggregate: quantile %v: %d picks", f, len(d.Picks[j]))
			}
			_, _, w := storage.QuantileRanks(s.Count, f)
			s.Quantiles = append(s.Quantiles, d.Picks[j][0]+w*(d.Picks[j][1]-d.Picks[j][0]))
		}
		out[i] = s
	}
	slices.SortFunc(out, func(a, b storage.Summary) int {
		if c := strings.Compare(a.System, b.System); c != 0 {
			return c
		}
		return strings.Compare(a.Code, b.Code)
	})
	return out, nil
}

// probeAggregate runs the Summarize pipeline on a known document of the
// probe collection and reports whether the server gave the known answer
// (an operator it lacks is an error, which means no).
func (b *Backend) probeAggregate(ctx context.Context) (bool, error) {
	if !b.elemMatch {
		return false, nil // the branches' filters could not be exact
	}
	col := b.db.Collection(colProbe)
	tok := func(p, code string) storage.Entry {
		return storage.Entry{Param: p, Kind: storage.KindToken, System: "sys", Code: code}
	}
	qty := func(p string, n float64) storage.Entry {
		return storage.Entry{Param: p, Kind: storage.KindQuantity, Num: n, NumLow: n, NumHigh: n, System: "sys", Code: "u"}
	}
	es := []storage.Entry{
		tok("code", "a"), qty("v", 2), qty("v2", 9),
		{Param: "cv", Kind: storage.KindComposite, Parts: []storage.Entry{tok("cc", "b"), qty("cq", 5)}},
		{Param: "cv", Kind: storage.KindComposite, Parts: []storage.Entry{tok("cc", "z"), qty("cq", 100)}},
		{Param: "s", Kind: storage.KindReference, RefType: "Patient", RefID: "p"},
		{Param: "dt", Kind: storage.KindDate, Low: 7, High: 8},
	}
	doc := resourceDoc{ID: "AggregateProbe/x", Type: "AggregateProbe", LID: "x", Keys: keysOf(es), Entries: toEntryDocs(es)}
	if _, err := col.ReplaceOne(ctx, bson.D{{Key: "_id", Value: doc.ID}}, doc, options.Replace().SetUpsert(true)); err != nil {
		return false, fmt.Errorf("mongo: write aggregate probe: %w", err)
	}
	codeIs := func(c string) storage.Expr { return storage.Cmp{Field: storage.FieldCode, Op: storage.OpEq, Value: c} }
	q := storage.AggregateQuery{Type: doc.Type, Value: "v", Subject: "s", Date: "dt", Quantiles: []float64{0.5},
		Where:     storage.Match{Param: "code", Kind: storage.KindToken, Cond: codeIs("a")},
		Component: &storage.ComponentValues{Param: "cv", Cond: storage.Part{Index: 0, Cond: codeIs("b")}, Part: 1}}
	pipe, ok, err := b.valuesPipeline(ctx, colProbe, q)
	if err != nil || !ok {
		return false, err
	}
	got, err := summarizeInDB(ctx, col, pipe, q.Quantiles)
	if err != nil {
		var ce mongo.CommandError
		if errors.As(err, &ce) {
			b.log.DebugContext(ctx, "aggregation pipeline unavailable", "err", err)
			return false, nil
		}
		return false, err
	}
	want := storage.Summary{System: "sys", Code: "u", Count: 2, Subjects: 1, Sum: 7, Min: 2, Max: 5, Mean: 3.5, SquaredDeviations: 4.5, Quantiles: []float64{3.5}}
	if len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
		b.log.WarnContext(ctx, "aggregation pipeline gave a wrong answer on the probe; statistics are reduced in Go", "got", fmt.Sprint(got))
		return false, nil
	}
	samples, err := samplesInDB(ctx, col, pipe)
	if err != nil {
		return false, err
	}
	return len(samples) == 2 && samples[0].Subject == "Patient/p" && samples[0].Date == 7, nil
}
