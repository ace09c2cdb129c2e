package fhir

import (
	"context"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

// TestReadRouteCoversRouteTable enumerates the GET routes the server
// registers (the route table and the routes added beside it: patient
// operations, OperationDefinition) and requires each to map, as a batch or
// transaction entry, to the same interaction its handler runs, or to be
// stated here as not an entry. A GET route added without either fails.
func TestReadRouteCoversRouteTable(t *testing.T) {
	want := map[string]readFunc{
		"/metadata":                (*Server).capabilitiesRead,
		"/_history":                (*Server).historySystemRead,
		"/:type":                   (*Server).searchTypeRead,
		"/:type/_history":          (*Server).historyTypeRead,
		"/:type/$everything":       (*Server).everythingAll,
		"/:type/:id":               (*Server).readInstance,
		"/:type/:id/_history":      (*Server).historyInstanceRead,
		"/:type/:id/$everything":   (*Server).everythingInstance,
		"/:type/:id/:comp":         (*Server).compartmentSearch,
		"/:type/:id/_history/:vid": (*Server).vreadInstance,
		"/Observation/$lastn":      (*Server).lastnRead,
		"/Observation/$stats":      (*Server).statsRead,
		"/OperationDefinition/:id": (*Server).operationDefinitionInstance,
	}
	// A patient operation's entry runs a closure over the operation.
	// So does a resource operation's.
	patientOps := map[string]bool{"/Patient/:id/$probe": true, "/Basic/:id/$probe": true}
	typeOps := map[string]bool{"/Basic/$probe": true}
	notEntries := map[string]bool{
		"":                           true, // system search needs _type, which a GET entry URL cannot start with
		"/":                          true,
		"/$export":                   true,
		"/Patient/$export":           true,
		"/Group/:id/$export":         true,
		"/$export-status/:job":       true,
		"/$export-file/:job/:file":   true,
		"/:type/:id/$reindex-status": true,
	}
	sample := strings.NewReplacer(":type", "Patient", ":id", "p1", ":vid", "2", ":comp", "Observation", ":job", "j1", ":file", "f1")
	s := &Server{
		patientOps: []PatientOperation{{Name: "probe", Definition: map[string]any{"resourceType": "OperationDefinition", "id": "probe"}}},
		resOps: []ResourceOperation{{Type: "Basic", Name: "probe", Definition: map[string]any{"resourceType": "OperationDefinition", "id": "basic-probe"},
			RunType: func(context.Context, []storage.Record, url.Values) (map[string]any, error) { return nil, nil }}},
	}
	seen := 0
	for _, r := range s.routes(nil).Routes() {
		path, ok := strings.CutPrefix(r.Path, "/fhir")
		if r.Method != http.MethodGet || !ok || path == "" || path == "/" {
			// Not FHIR (/healthz), or the base itself (system search),
			// which is no entry URL: parseEntryURL refuses an empty
			// request.url.
			continue
		}
		seen++
		fn, params, err := s.readRoute(strings.Split(strings.TrimPrefix(sample.Replace(path), "/"), "/"))
		switch {
		case notEntries[path]:
			if err == nil {
				t.Errorf("GET %s: an entry, but listed as not one", path)
			}
		case patientOps[path]:
			if err != nil || fn == nil || params["id"] != "p1" {
				t.Errorf("GET %s: the patient operation is not an entry (%v)", path, err)
			}
		case typeOps[path]:
			if err != nil || fn == nil {
				t.Errorf("GET %s: the type-level resource operation is not an entry (%v)", path, err)
			}
		case want[path] == nil:
			t.Errorf("GET %s: no batch entry mapping and no exemption", path)
		case err != nil:
			t.Errorf("GET %s: %v", path, err)
		case reflect.ValueOf(fn).Pointer() != reflect.ValueOf(want[path]).Pointer():
			t.Errorf("GET %s: maps to another interaction", path)
		}
	}
	if seen < len(want)+len(patientOps)+len(typeOps)+len(notEntries)-2 {
		t.Errorf("%d GET routes enumerated: the walk misses some", seen)
	}
}
