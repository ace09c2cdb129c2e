package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/anodyne-fhir/anodyne/storage"
)

var _ storage.Aggregator = (*Backend)(nil)

// values writes the common table expression v(pk, id, system, code, num):
// one row per Value entry of the matching resources.
func aggregateValues(q storage.AggregateQuery) (*sqlb, error) {
	if q.Type == "" || q.Value == "" {
		return nil, errors.New("sqlite: aggregate: Type and Value are required")
	}
	n := 0
	b := newSQLB(&n)
	b.w(`WITH v AS (SELECT r.pk AS pk, r.id AS id, q.system AS system, q.code AS code, q.num AS num
 FROM resources r JOIN idx_quantity q ON q.res_pk = r.pk AND q.param = ?
 WHERE r.deleted = 0 AND +r.type = ?`, q.Value, q.Type)
	if q.Filter != nil {
		b.w(" AND ")
		if err := b.resource(q.Filter, "r"); err != nil {
			return nil, fmt.Errorf("sqlite: aggregate %v: %w", q.Filter, err)
		}
	}
	b.w(")")
	return b, nil
}

// Summarize implements storage.Aggregator in SQL: counts, sums, extremes
// and the mean in one grouped pass, squared deviations from the group's
// mean by a window, and each quantile's two ranks from one sorted pass
// per unit.
func (b *Backend) Summarize(ctx context.Context, q storage.AggregateQuery) ([]storage.Summary, error) {
	v, err := aggregateValues(q)
	if err != nil {
		return nil, err
	}
	tx, err := b.r.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlite: aggregate: %w", err)
	}
	defer tx.Rollback()
	sqlText := v.String() + `, w AS (SELECT v.*, AVG(num) OVER (PARTITION BY system, code) AS m FROM v)
SELECT system, code, COUNT(*), SUM(num), MIN(num), MAX(num), AVG(num), SUM((num - m) * (num - m)),
 (SELECT COUNT(DISTINCT p.ref_type || '/' || p.ref_id) FROM idx_reference p
   WHERE p.param = ? AND p.ref_id != '' AND p.res_pk IN (SELECT pk FROM v v2 WHERE v2.system = w.system AND v2.code = w.code))
FROM w GROUP BY system, code ORDER BY system, code`
	args := append(append([]any{}, v.args...), q.Subject)
	rows, err := tx.QueryContext(ctx, sqlText, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: aggregate: %w", err)
	}
	var out []storage.Summary
	for rows.Next() {
		var s storage.Summary
		if err := rows.Scan(&s.System, &s.Code, &s.Count, &s.Sum, &s.Min, &s.Max, &s.Mean, &s.SquaredDeviations, &s.Subjects); err != nil {
			rows.Close()
			return nil, fmt.Errorf("sqlite: aggregate: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("sqlite: aggregate: %w", err)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: aggregate: %w", err)
	}
	if len(q.Quantiles) > 0 {
		for i := range out {
			if err := quantiles(ctx, tx, v, q.Quantiles, &out[i]); err != nil {
				return nil, err
			}
		}
	}
	return out, tx.Commit()
}

// quantiles reads the ranks each quantile needs from one sorted pass over
// the unit's values.
func quantiles(ctx context.Context, tx *sql.Tx, v *sqlb, qs []float64, s *storage.Summary) error {
	need := map[int]float64{}
	var ranks []any
	for _, q := range qs {
		lo, hi, _ := storage.QuantileRanks(s.Count, q)
		for _, r := range []int{lo, hi} {
			if _, ok := need[r]; !ok {
				need[r] = 0
				ranks = append(ranks, r)
			}
		}
	}
	sqlText := v.String() + ` SELECT rn, num FROM (SELECT num, ROW_NUMBER() OVER (ORDER BY num) - 1 AS rn FROM v WHERE system = ? AND code = ?)
 WHERE rn IN (` + placeholders(len(ranks)) + `)`
	args := append(append(append([]any{}, v.args...), s.System, s.Code), ranks...)
	rows, err := tx.QueryContext(ctx, sqlText, args...)
	if err != nil {
		return fmt.Errorf("sqlite: aggregate quantiles: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var rn int
		var num float64
		if err := rows.Scan(&rn, &num); err != nil {
			return fmt.Errorf("sqlite: aggregate quantiles: %w", err)
		}
		need[rn] = num
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite: aggregate quantiles: %w", err)
	}
	for _, q := range qs {
		lo, hi, w := storage.QuantileRanks(s.Count, q)
		s.Quantiles = append(s.Quantiles, need[lo]+w*(need[hi]-need[lo]))
	}
	return nil
}

// Samples implements storage.Aggregator: index rows only, no documents.
func (b *Backend) Samples(ctx context.Context, q storage.AggregateQuery) ([]storage.Sample, error) {
	v, err := aggregateValues(q)
	if err != nil {
		return nil, err
	}
	sqlText := v.String() + ` SELECT id, system, code, num,
 COALESCE((SELECT MIN(p.ref_type || '/' || p.ref_id) FROM idx_reference p WHERE p.res_pk = v.pk AND p.param = ? AND p.ref_id != ''), ''),
 COALESCE((SELECT MIN(d.low) FROM idx_date d WHERE d.res_pk = v.pk AND d.param = ?), ?)
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
