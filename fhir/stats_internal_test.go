package fhir

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/conformance"
)

func TestParseStats(t *testing.T) {
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	ok := []struct {
		query      string
		codes      int
		start, end int64
		include    bool
		limit      int
	}{
		{"code=72514-3&system=http://loinc.org&statistic=count", 1, -1, -1, false, defaultStatsLimit},
		{"coding=http://loinc.org|72514-3,http://loinc.org|8867-4&statistic=average,median", 2, -1, -1, false, defaultStatsLimit},
		{"code=a,b&statistic=count&duration=2", 2, at.Add(-2 * time.Hour).UnixMilli(), at.UnixMilli(), false, defaultStatsLimit},
		{"code=a&statistic=count&period=2024-01/2024-02", 1, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(),
			time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli() - 1, false, defaultStatsLimit},
		{"code=a&statistic=count&period=2024-01-02/", 1, time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC).UnixMilli(), -1, false, defaultStatsLimit},
		{"code=a&statistic=count&include=true&limit=5000", 1, -1, -1, true, maxStatsLimit},
	}
	for _, tc := range ok {
		q, _ := url.ParseQuery(tc.query)
		r, err := parseStats(q, at)
		if err != nil {
			t.Errorf("%s: %v", tc.query, err)
			continue
		}
		if tc.start == -1 {
			tc.start = r.start
			if r.period && tc.end == -1 {
				t.Errorf("%s: unexpected period", tc.query)
			}
		}
		if tc.end == -1 {
			tc.end = r.end
		}
		if len(r.codes) != tc.codes || r.start != tc.start || r.end != tc.end || r.include != tc.include || r.limit != tc.limit {
			t.Errorf("%s: %+v", tc.query, r)
		}
	}
	for _, bad := range []string{
		"", "code=a", "statistic=count", "code=a&statistic=kurtosis", "code=a&statistic=count&duration=0",
		"code=a&statistic=count&duration=x", "code=a&statistic=count&period=2024", "code=a&statistic=count&period=/",
		"code=a&statistic=count&period=2024-02-01/2024-01-01", "code=a&statistic=count&period=x/", "code=a&statistic=count&include=yes",
		"code=a&statistic=count&limit=-3", "code=a&statistic=count&subject=Patient/1&patient=Group/2", "system=s&statistic=count",
		"coding=nobar&statistic=count", "code=a&statistic=count&duration=1&period=2024/2025", "code=a&statistic=count&subject=a&subject=b",
		"code=a&statistic=count&unknown=1", "code=,&statistic=count",
	} {
		q, _ := url.ParseQuery(bad)
		if _, err := parseStats(q, at); err == nil {
			t.Errorf("%q was accepted", bad)
		} else if fe, ok := err.(*Error); !ok || fe.Status != 400 {
			t.Errorf("%q: %v, want a 400 *Error", bad, err)
		}
	}
}

// TestStatsDefinition: the published OperationDefinition is valid R4 and
// names every statistic the server computes.
func TestStatsDefinition(t *testing.T) {
	v, err := conformance.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	if _, issues := v.Validate(context.Background(), statsDefinitionJSON); len(issues) > 0 {
		for _, is := range issues {
			if isErrorIssue(is) {
				t.Errorf("observation-stats.json: %s at %s", is.Diagnostics, is.Expression)
			}
		}
	}
	def, err := statsDefinition()
	if err != nil {
		t.Fatal(err)
	}
	doc := mustJSON(def)
	for _, s := range statistics {
		if !strings.Contains(doc, s.code) {
			t.Errorf("the definition does not name statistic %s", s.code)
		}
	}
}
