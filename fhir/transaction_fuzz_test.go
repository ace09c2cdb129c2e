package fhir_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzBundle posts arbitrary bodies to the base URL (batch and
// transaction) through the real handler on SQLite: the answer must be a
// JSON resource with a 2xx or 4xx status, never a 500 or a panic.
func FuzzBundle(f *testing.F) {
	f.Add([]byte(bundleJSON("transaction", postEntry("urn:uuid:1", `{"resourceType":"Patient"}`))))
	f.Add([]byte(bundleJSON("batch", `{"request":{"method":"GET","url":"Patient?_count=1"}}`, `{"request":{"method":"DELETE","url":"Patient?name=x"}}`)))
	f.Add([]byte(bundleJSON("transaction", `{"fullUrl":"urn:uuid:a","resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient?identifier=a|b"}},"request":{"method":"PUT","url":"Observation?code=x"}}`)))
	f.Add([]byte(bundleJSON("transaction", `{"resource":{"resourceType":"Binary","contentType":"application/json-patch+json","data":"W10="},"request":{"method":"PATCH","url":"Patient/1"}}`)))
	f.Add([]byte(`{"resourceType":"Bundle","type":"batch","entry":[null,{},{"request":null}]}`))
	f.Add([]byte(`{"resourceType":"Bundle","type":"transaction","entry":{"a":1}}`))
	h := fuzzHandler(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/fhir", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/fhir+json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.Bytes())
		}
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out["resourceType"] == nil {
			t.Fatalf("status %d, body is not a resource (%v): %q", rec.Code, err, rec.Body.Bytes())
		}
	})
}
