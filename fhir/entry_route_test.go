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

// TestEntryRouteCoversRouteTable enumerates every route the server
// registers (the route table and the routes added beside it: patient and
// resource operations, OperationDefinition), of every method, and
// requires each to be reachable as a batch or transaction entry running
// the same interaction its handler runs (a read by readRoute, a POSTed
// operation by opRoute, a write by the write path), or to be stated here
// as not an entry. A route added without either fails.
func TestEntryRouteCoversRouteTable(t *testing.T) {
	reads := map[string]ReadFunc{
		"GET /metadata":                  (*Server).Capabilities,
		"GET /_history":                  (*Server).HistorySystem,
		"GET /:type":                     (*Server).SearchType,
		"GET /:type/_history":            (*Server).HistoryType,
		"GET /:type/$everything":         (*Server).EverythingType,
		"GET /:type/:id":                 (*Server).Read,
		"GET /:type/:id/_history":        (*Server).HistoryInstance,
		"GET /:type/:id/$everything":     (*Server).Everything,
		"GET /:type/:id/$reindex-status": (*Server).ReindexStatus,
		"GET /:type/:id/:comp":           (*Server).SearchCompartment,
		"GET /:type/:id/_history/:vid":   (*Server).VRead,
		"GET /Observation/$lastn":        (*Server).LastN,
		"GET /Observation/$stats":        (*Server).Stats,
		"GET /OperationDefinition/:id":   (*Server).ReadOperationDefinition,
		"POST /Observation/$lastn":       (*Server).LastN,
		"POST /Observation/$stats":       (*Server).Stats,
		"POST /:type/$validate":          (*Server).ValidateType,
		"POST /:type/:id/$validate":      (*Server).ValidateInstance,
	}
	// A patient or resource operation's entry runs a closure over the
	// operation; it must carry the instance's id.
	ops := map[string]bool{"GET /Patient/:id/$probe": true, "GET /Basic/:id/$probe": true, "POST /Basic/:id/$probe": true}
	// A type-level resource operation's entry carries no id.
	typeOps := map[string]bool{"GET /Basic/$probe": true, "POST /Basic/$probe": true}
	writes := map[string]bool{
		"POST /:type": true, "PUT /:type": true, "DELETE /:type": true,
		"PUT /:type/:id": true, "PATCH /:type/:id": true, "DELETE /:type/:id": true,
	}
	notEntries := map[string]string{
		"GET ":                         "system search needs _type, which a GET entry URL cannot start with",
		"GET /":                        "the same",
		"POST ":                        "a Bundle in a Bundle",
		"POST /":                       "the same",
		"POST /_search":                "a form body, which an entry cannot carry: the same search is a GET entry",
		"POST /:type/_search":          "the same",
		"GET /$export":                 "asynchronous",
		"GET /Patient/$export":         "asynchronous",
		"GET /Group/:id/$export":       "asynchronous",
		"GET /$export-status/:job":     "the status of an asynchronous request",
		"DELETE /$export-status/:job":  "the same",
		"GET /$export-file/:job/:file": "NDJSON files",
		"POST /$import":                "an NDJSON body, which an entry cannot carry",
	}
	sample := strings.NewReplacer(":type", "Patient", ":id", "p1", ":vid", "2", ":comp", "Observation", ":job", "j1", ":file", "f1")
	s := &Server{
		base:       "http://example.org/fhir",
		patientOps: []PatientOperation{{Name: "probe", Definition: map[string]any{"resourceType": "OperationDefinition", "id": "probe"}}},
		resOps: []ResourceOperation{{Type: "Basic", Name: "probe", Definition: map[string]any{"resourceType": "OperationDefinition", "id": "basic-probe"},
			RunType: func(context.Context, []storage.Record, url.Values) (map[string]any, error) { return nil, nil }}},
	}
	seen := 0
	for _, r := range s.routes(nil).Routes() {
		path, ok := strings.CutPrefix(r.Path, "/fhir")
		if !ok {
			continue // not FHIR (/healthz)
		}
		seen++
		key := r.Method + " " + path
		if why, ok := notEntries[key]; ok {
			if why == "" {
				t.Errorf("%s: an exemption needs its reason", key)
			}
			if path == "" || path == "/" {
				continue // parseEntryURL refuses an empty request.url
			}
		}
		e := &txEntry{n: 0, method: r.Method, url: strings.TrimPrefix(sample.Replace(path), "/")}
		if r.Method == http.MethodPost {
			e.raw = []byte(`{"resourceType":"Parameters"}`) // an operation's input
		}
		if r.Method == http.MethodPut || r.Method == http.MethodDelete {
			if path == "/:type" {
				e.url += "?identifier=x"
			}
		}
		err := s.parseEntryURL(e)
		var fn ReadFunc
		var params map[string]string
		switch {
		case err != nil:
		case e.op:
			var op entryOp
			op, err = s.opRoute(strings.Split(e.target, "/"))
			fn, params = op.fn, op.path
		case e.reads():
			fn, params, err = s.readRoute(strings.Split(e.target, "/"))
		}
		switch {
		case notEntries[key] != "":
			if err == nil {
				t.Errorf("%s: an entry, but listed as not one", key)
			}
		case writes[key]:
			if err != nil || e.reads() {
				t.Errorf("%s: not a write entry (%v)", key, err)
			}
		case typeOps[key]:
			if err != nil || fn == nil {
				t.Errorf("%s: the type-level resource operation is not an entry (%v)", key, err)
			}
		case ops[key]:
			if err != nil || fn == nil || params["id"] != "p1" {
				t.Errorf("%s: the operation is not an entry (%v)", key, err)
			}
		case reads[key] == nil:
			t.Errorf("%s: no batch entry mapping and no exemption", key)
		case err != nil:
			t.Errorf("%s: %v", key, err)
		case reflect.ValueOf(fn).Pointer() != reflect.ValueOf(reads[key]).Pointer():
			t.Errorf("%s: maps to another interaction", key)
		}
	}
	if seen < len(reads)+len(ops)+len(typeOps)+len(writes)+len(notEntries) {
		t.Errorf("%d routes enumerated: the walk misses some", seen)
	}
}
