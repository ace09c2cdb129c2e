package sqlite

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

var _ storage.Aggregator = (*Backend)(nil)

// aggregateValues writes the common table expression v(pk, id, system,
// code, num): one row per value of the matching resources, the Value
// entries of those that match Where and the quantity parts of the
// Component entries that satisfy its condition.
func aggregateValues(q storage.AggregateQuery) (*sqlb, error) {
	if q.Type == "" || q.Value == "" {
		return nil, errors.New("sqlite: aggregate: Type and Value are required")
	}
	n := 0
	b := newSQLB(&n)
	filter := func(e storage.Expr) error {
		if e == nil {
			return nil
		}
		b.w(" AND ")
		if err := b.resource(e, "r"); err != nil {
			return fmt.Errorf("sqlite: aggregate %v: %w", e, err)
		}
		return nil
	}
	b.w(`WITH v AS (SELECT r.pk AS pk, r.id AS id, q.system AS system, q.code AS code, q.num AS num
 FROM resources r JOIN idx_quantity q ON q.res_pk = r.pk AND q.param = ?
 WHERE r.deleted = 0 AND +r.type = ?`, q.Value, q.Type)
	if err := filter(q.Filter); err != nil {
		return nil, err
	}
	if err := filter(q.Where); err != nil {
		return nil, err
	}
	if c := q.Component; c != nil {
		b.w(`
 UNION ALL SELECT r.pk, r.id, cp.system, cp.code, cp.num
 FROM resources r JOIN idx_composite c ON c.res_pk = r.pk AND c.param = ? JOIN idx_composite_part cp ON cp.cid = c.cid AND cp.part = ?
 WHERE r.deleted = 0 AND +r.type = ?`, c.Param, c.Part, q.Type)
		if c.Cond != nil {
			b.w(" AND ")
			if err := b.entry(c.Cond, compositeTable, "c", true); err != nil {
				return nil, fmt.Errorf("sqlite: aggregate component %v: %w", c.Cond, err)
			}
		}
		if err := filter(q.Filter); err != nil {
			return nil, err
		}
	}
	b.w(")")
	return b, nil
}

// Summarize implements storage.Aggregator in one SQL statement over the
// matching values, materialized once: counts, sums, extremes and the mean
// grouped by unit; a histogram of each unit (one row per distinct value,
// its count and the running count up to it), from which come the squared
// deviations from the unit's mean and the quantiles; and, when Subject is
// set, the distinct subjects from the materialized rows (a resource counts
// as its lowest Subject target only, as in Samples: it belongs to one
// subject). The two ranks each quantile interpolates between are computed
// from the unit's count in SQL, and the value at zero-based rank r is the
// least value whose running count exceeds r: one probe of the histogram
// instead of numbering every value. They come back as rows of their own
// (kind 1) so that the values are exact REALs.
func (b *Backend) Summarize(ctx context.Context, q storage.AggregateQuery) ([]storage.Summary, error) {
	v, err := aggregateValues(q)
	if err != nil {
		return nil, err
	}
	qs := make([]any, len(q.Quantiles))
	for i, f := range q.Quantiles {
		qs[i] = math.Min(math.Max(f, 0), 1) // as storage.QuantileRanks clamps
	}
	ranks := ""
	if len(qs) > 0 {
		// storage.QuantileRanks: lo = floor((n-1)q) (a non-negative REAL
		// cast to INTEGER truncates), hi = min(lo+1, n-1).
		ranks = `
UNION ALL
SELECT 1, k.system, k.code, k.r, (SELECT MIN(h.num) FROM h WHERE h.system = k.system AND h.code = k.code AND h.cum > k.r), 0, 0, 0, 0, 0
 FROM (SELECT DISTINCT g.system, g.code, MIN(CAST((g.n - 1) * x.q AS INTEGER) + o.d, g.n - 1) AS r FROM g, x, (SELECT 0 AS d UNION ALL SELECT 1) o) k`
	}
	subjects := "0"
	if q.Subject != "" {
		subjects = `(SELECT COUNT(DISTINCT (SELECT MIN(p.ref_type || '/' || p.ref_id) FROM idx_reference p WHERE p.res_pk = v.pk AND +p.param = ? AND p.ref_id != ''))
   FROM v WHERE v.system = g.system AND v.code = g.code)`
	}
	sqlText := strings.Replace(v.String(), "WITH v AS (", "WITH v AS MATERIALIZED (", 1) + `,
g AS MATERIALIZED (SELECT system, code, COUNT(*) AS n, SUM(num) AS s, MIN(num) AS lo, MAX(num) AS hi, AVG(num) AS m FROM v GROUP BY system, code),
h AS MATERIALIZED (SELECT system, code, num, c, SUM(c) OVER (PARTITION BY system, code ORDER BY num) AS cum
 FROM (SELECT system, code, num, COUNT(*) AS c FROM v GROUP BY system, code, num)),
x(q) AS (VALUES ` + valuesList(len(qs)) + `)
SELECT 0 AS kind, g.system, g.code, g.n, g.s, g.lo, g.hi, g.m,
 (SELECT SUM(h.c * (h.num - g.m) * (h.num - g.m)) FROM h WHERE h.system = g.system AND h.code = g.code),
 ` + subjects + `
FROM g` + ranks + `
ORDER BY 2, 3, 1`
	args := append([]any{}, v.args...)
	if len(qs) == 0 {
		args = append(args, nil)
	}
	args = append(args, qs...)
	if q.Subject != "" {
		args = append(args, q.Subject)
	}
	rows, err := b.r.QueryContext(ctx, sqlText, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: aggregate: %w", err)
	}
	defer rows.Close()
	var out []storage.Summary
	var picked map[int]float64
	finish := func() {
		if len(out) == 0 {
			return
		}
		s := &out[len(out)-1]
		for _, f := range q.Quantiles {
			lo, hi, w := storage.QuantileRanks(s.Count, f)
			s.Quantiles = append(s.Quantiles, picked[lo]+w*(picked[hi]-picked[lo]))
		}
	}
	for rows.Next() {
		var kind int
		var s storage.Summary
		if err := rows.Scan(&kind, &s.System, &s.Code, &s.Count, &s.Sum, &s.Min, &s.Max, &s.Mean, &s.SquaredDeviations, &s.Subjects); err != nil {
			return nil, fmt.Errorf("sqlite: aggregate: %w", err)
		}
		if kind == 0 {
			finish()
			out = append(out, s)
			picked = map[int]float64{}
			continue
		}
		// A rank row: Count holds the rank, Sum the value.
		picked[s.Count] = s.Sum
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: aggregate: %w", err)
	}
	finish()
	return out, nil
}

// valuesList is n one-column VALUES rows of placeholders; n = 0 gives one
// NULL row (bound by the caller), which no rank matches.
func valuesList(n int) string {
	if n == 0 {
		return "(?)"
	}
	return "(?)" + strings.Repeat(", (?)", n-1)
}

// Samples implements storage.Aggregator: index rows only, no documents.
func (b *Backend) Samples(ctx context.Context, q storage.AggregateQuery) ([]storage.Sample, error) {
	v, err := aggregateValues(q)
	if err != nil {
		return nil, err
	}
	// The lookups per sample go by resource (unary + keeps param out of
	// index choice): by param alone, SQLite picked idx_date_low and
	// scanned every date of the type for each sample, seconds over a few
	// thousand samples (issue 11).
	sqlText := v.String() + ` SELECT id, system, code, num,
 COALESCE((SELECT MIN(p.ref_type || '/' || p.ref_id) FROM idx_reference p WHERE p.res_pk = v.pk AND +p.param = ? AND p.ref_id != ''), ''),
 COALESCE((SELECT MIN(d.low) FROM idx_date d WHERE d.res_pk = v.pk AND +d.param = ?), ?)
FROM v`
	args := append(append([]any{}, v.args...), q.Subject, q.Date, storage.MinDate)
	rows, err := b.r.QueryContext(ctx, sqlText, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: aggregate samples: %w", err)
	}
	defer rows.Close()
	var out []storage.Sample
	for rows.Next() {
		var s storage.Sample
		if err := rows.Scan(&s.ID, &s.System, &s.Code, &s.Num, &s.Subject, &s.Date); err != nil {
			return nil, fmt.Errorf("sqlite: aggregate samples: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: aggregate samples: %w", err)
	}
	return out, nil
}
