package fhir

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestReadRouteCoversRouteTable enumerates the GET routes and requires
// each to map, as a batch or transaction entry, to the same interaction
// its handler runs, or to be stated here as not an entry. A GET route
// added without either fails.
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
	}
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
	s := &Server{}
	for _, r := range routeTable() {
		if r.method != http.MethodGet || r.path == "" || r.path == "/" {
			// The base itself (system search) is no entry URL: parseEntryURL
			// refuses an empty request.url.
			continue
		}
		path := strings.TrimPrefix(sample.Replace(r.path), "/")
		fn, _, err := s.readRoute(strings.Split(path, "/"))
		switch {
		case notEntries[r.path]:
			if err == nil {
				t.Errorf("GET %s: an entry, but listed as not one", r.path)
			}
		case want[r.path] == nil:
			t.Errorf("GET %s: no batch entry mapping and no exemption", r.path)
		case err != nil:
			t.Errorf("GET %s: %v", r.path, err)
		case reflect.ValueOf(fn).Pointer() != reflect.ValueOf(want[r.path]).Pointer():
			t.Errorf("GET %s: maps to another interaction", r.path)
		}
	}
}
