package resources

import (
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

// TestServerParams: the server-defined parameters (Flag status, which R4
// core lacks) are registered from data/server-search-parameters.json
// under Anodyne's canonical, index what their expression selects and
// compile to queries that storage.Matches judges like the index.
func TestServerParams(t *testing.T) {
	r := registry(t)
	p, ok := r.Param("Flag", "status")
	if !ok {
		t.Fatal("Flag has no status parameter")
	}
	if p.URL != ServerParamBase+"Flag-status" || p.Type != storage.KindToken || p.Custom {
		t.Fatalf("Flag status = %+v", p)
	}
	if _, ok := r.ParamByURL("http://anodyne-fhir.org/fhir/SearchParameter/Flag-status"); !ok {
		t.Error("Flag-status not found by its canonical")
	}
	flag := func(status string) map[string]any {
		return decode(t, `{"resourceType":"Flag","id":"f","status":"`+status+`","code":{"text":"pain"},"subject":{"reference":"Patient/p"}}`)
	}
	q, err := r.Compile("Flag", "status", "", []string{"active"})
	if err != nil {
		t.Fatal(err)
	}
	for status, want := range map[string]bool{"active": true, "inactive": false, "entered-in-error": false} {
		entries, err := r.Index("Flag", flag(status))
		if err != nil {
			t.Fatal(err)
		}
		var codes []string
		for _, e := range entries {
			if e.Param == "status" {
				codes = append(codes, e.Code)
			}
		}
		if len(codes) != 1 || codes[0] != status {
			t.Errorf("Flag %s: status entries %v", status, codes)
		}
		got, err := storage.Matches(q, "f", entries)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("status=active on a %s Flag: %v, want %v", status, got, want)
		}
	}
	// Other types keep what R4 gives them: Basic has no status.
	if _, ok := r.Param("Basic", "status"); ok {
		t.Error("Basic got a status parameter")
	}
}

// TestServerParamsGuard: a server-defined parameter adds to R4 and never
// replaces an official one, and lives under Anodyne's canonical base.
func TestServerParamsGuard(t *testing.T) {
	r, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	def := func(url, code, base string) map[string]any {
		return map[string]any{"resourceType": "SearchParameter", "url": url, "code": code, "base": []any{base}, "type": "token", "expression": base + ".status"}
	}
	bad := map[string]map[string]any{
		"official code":     def(ServerParamBase+"Observation-status", "status", "Observation"),
		"foreign canonical": def("http://example.org/SearchParameter/Basic-x", "x", "Basic"),
		"generic base":      def(ServerParamBase+"Resource-x", "x", "Resource"),
	}
	for name, d := range bad {
		r.mu.Lock()
		err := r.addServerParamsLocked([]map[string]any{d})
		r.mu.Unlock()
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if p, _ := r.Param("Observation", "status"); p.URL != "http://hl7.org/fhir/SearchParameter/Observation-status" {
		t.Errorf("Observation status is now %s", p.URL)
	}
}
