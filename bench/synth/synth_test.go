package synth

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage/sqlite"
)

// scan is an independent reading of the generated files: what the
// manifest claims is recomputed from the NDJSON itself.
type scan struct {
	perType    map[string]int
	perPatient map[string]int
	perCode    map[string]int
	minDate    time.Time
	maxDate    time.Time
	ids        map[string]bool
}

func scanDir(t *testing.T, dir string) scan {
	t.Helper()
	s := scan{perType: map[string]int{}, perPatient: map[string]int{}, perCode: map[string]int{}, ids: map[string]bool{}}
	for _, name := range []string{"Patient.ndjson", "Encounter.ndjson", "Observation.ndjson"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var r struct {
				ResourceType string `json:"resourceType"`
				ID           string `json:"id"`
				Subject      struct{ Reference string }
				Code         struct {
					Coding []struct{ System, Code string }
				}
				Effective string `json:"effectiveDateTime"`
			}
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if s.ids[r.ResourceType+"/"+r.ID] {
				t.Fatalf("duplicate id %s/%s", r.ResourceType, r.ID)
			}
			s.ids[r.ResourceType+"/"+r.ID] = true
			s.perType[r.ResourceType]++
			if r.ResourceType == "Observation" {
				s.perPatient[strings.TrimPrefix(r.Subject.Reference, "Patient/")]++
				s.perCode[r.Code.Coding[0].Code]++
				at, err := time.Parse(time.RFC3339, r.Effective)
				if err != nil {
					t.Fatal(err)
				}
				if s.minDate.IsZero() || at.Before(s.minDate) {
					s.minDate = at
				}
				if at.After(s.maxDate) {
					s.maxDate = at
				}
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestWriteDeterministic(t *testing.T) {
	cfg := Config{Seed: 7, Resources: 3000}
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	if _, err := Write(a, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(b, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(c, Config{Seed: 8, Resources: 3000}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Patient.ndjson", "Encounter.ndjson", "Observation.ndjson"} {
		x, _ := os.ReadFile(filepath.Join(a, name))
		y, _ := os.ReadFile(filepath.Join(b, name))
		z, _ := os.ReadFile(filepath.Join(c, name))
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two runs with the same seed", name)
		}
		if bytes.Equal(x, z) {
			t.Errorf("%s is the same for seeds 7 and 8", name)
		}
	}
}

// TestSkew checks the properties the benchmarks rely on, on 30,000
// resources, against counts taken from the files.
func TestSkew(t *testing.T) {
	dir := t.TempDir()
	m, err := Write(dir, Config{Seed: 1, Resources: 30000})
	if err != nil {
		t.Fatal(err)
	}
	s := scanDir(t, dir)
	if got := s.perType["Patient"] + s.perType["Encounter"] + s.perType["Observation"]; got != 30000 || m.Resources != 30000 {
		t.Fatalf("resources: files %d, manifest %d, want 30000", got, m.Resources)
	}
	if m.Observations != s.perType["Observation"] || m.Encounters != s.perType["Encounter"] || len(m.Patients) != s.perType["Patient"] {
		t.Errorf("manifest counts %d/%d/%d, files %v", m.Observations, m.Encounters, len(m.Patients), s.perType)
	}
	for _, p := range m.Patients {
		if s.perPatient[p.ID] != p.Observations {
			t.Errorf("%s: manifest %d Observations, files %d", p.ID, p.Observations, s.perPatient[p.ID])
		}
	}
	if !maps(m.CodeCounts, s.perCode) {
		t.Errorf("code counts: manifest %v, files %v", m.CodeCounts, s.perCode)
	}

	// Patients: heavy tail. The largest history is far above the median
	// and the largest tenth of the patients hold most Observations.
	counts := make([]int, 0, len(s.perPatient))
	for _, n := range s.perPatient {
		counts = append(counts, n)
	}
	slices.Sort(counts)
	median, largest := counts[len(counts)/2], counts[len(counts)-1]
	if largest < 1000 || largest < 20*median {
		t.Errorf("largest history %d, median %d: not skewed enough", largest, median)
	}
	top := 0
	for _, n := range counts[len(counts)*9/10:] {
		top += n
	}
	if frac := float64(top) / float64(s.perType["Observation"]); frac < 0.4 {
		t.Errorf("the largest 10%% of histories hold %.2f of the Observations, want >= 0.4", frac)
	}

	// Codes: common to rare in the order of the Synthea table.
	codes, err := Codes()
	if err != nil {
		t.Fatal(err)
	}
	first, tenth, last := s.perCode[codes[0].Code], s.perCode[codes[9].Code], s.perCode[codes[len(codes)-1].Code]
	if codes[0].Code != "72514-3" || first < 4*tenth || tenth < 4*last || last == 0 {
		t.Errorf("code counts by rank: 1st %s %d, 10th %d, last %d", codes[0].Code, first, tenth, last)
	}
	if span := s.maxDate.Sub(s.minDate); span < 5*365*24*time.Hour || s.maxDate.After(m.Config.End) {
		t.Errorf("dates from %s to %s", s.minDate, s.maxDate)
	}
}

func maps(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestImport loads a small set through the real import pipeline (schema
// and google/fhir validation, index extraction, SQLite Commit): every
// resource is accepted, and a search finds each patient's Observations.
func TestImport(t *testing.T) {
	dir := t.TempDir()
	m, err := Write(dir, Config{Seed: 3, Resources: 1500})
	if err != nil {
		t.Fatal(err)
	}
	be, err := sqlite.Open(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	srv, err := fhir.New(fhir.Config{BaseURL: "http://bench.local", Backend: be, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := srv.Importer().ImportPaths(t.Context(), m.Files, fhir.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 0 || rep.Stored != 1500 {
		t.Fatalf("stored %d, failed %d: %+v", rep.Stored, rep.Failed, rep.Failures[:min(3, len(rep.Failures))])
	}
	h := srv.Handler()
	for _, p := range m.Patients[:5] {
		req := httptest.NewRequest(http.MethodGet, "/fhir/Observation?patient="+p.ID+"&_summary=count", nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var b struct{ Total int }
		if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		if b.Total != p.Observations {
			t.Errorf("%s: search total %d, generated %d", p.ID, b.Total, p.Observations)
		}
	}
}
