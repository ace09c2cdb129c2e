package conformance

import (
	"context"
	"path/filepath"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzValidate: go test -run '^$' -fuzz=FuzzValidate ./conformance
// Validate must never panic or hang, and must stay consistent: a body it
// accepts has a known resource type and a decoded resource.
func FuzzValidate(f *testing.F) {
	for _, pattern := range []string{"testdata/valid/*.json", "testdata/broken/*.json", "testdata/examples/Observation-*.json", "testdata/examples/Bundle-*.json"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			f.Add(readFile(f, file))
		}
	}
	f.Add([]byte(`{"resourceType":"Parameters","parameter":[{"name":"a","part":[{"name":"b","resource":{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","contained":[{"resourceType":"Parameters","parameter":[{"name":"c","resource":{"resourceType":"Basic"}}]}]}}]}}]}]}`))
	v := newTestValidator(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		start := time.Now()
		parsed, issues := v.Validate(context.Background(), body)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("validation of %d bytes took %v", len(body), d)
		}
		for _, is := range issues {
			if is.Severity == "" || is.Code == "" || !utf8.ValidString(is.Expression) {
				t.Errorf("malformed issue %+v", is)
			}
		}
		if !HasErrors(issues) && (!IsResourceType(parsed.Type) || parsed.Resource == nil) {
			t.Errorf("accepted body without a known type/resource: %q", parsed.Type)
		}
	})
}
