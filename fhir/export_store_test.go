package fhir_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/fhir"
)

// TestBulkExportAcrossServers: two servers share one store and keep export
// files in it. A job accepted by the one without workers runs on the
// other; either answers its status and serves its files (with ranges),
// and a DELETE on either removes the record and the files from the store.
func TestBulkExportAcrossServers(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			b := be.open(t)
			inStore := func(workers int) func(*fhir.Config) {
				return func(cfg *fhir.Config) { cfg.ExportInStore, cfg.ExportWorkers = true, workers }
			}
			a, _ := startServer(t, b, inStore(-1))
			w, _ := startServer(t, b, inStore(1))
			for i := range 3 {
				a.do("PUT", fmt.Sprintf("/Patient/p%d", i), patientJSON(fmt.Sprintf("p%d", i), "Shared")).expect(t, http.StatusCreated)
			}
			status := kickOff(t, a, "/$export?_type=Patient")
			path := status[strings.Index(status, "/$export-status/"):]
			m := await(t, a, status) // run by w's worker, polled on a
			if len(m.Output) != 1 || m.Output[0].Count != 3 || !strings.HasPrefix(m.Output[0].URL, a.base) {
				t.Fatalf("manifest from a: %+v", m)
			}
			fromA := a.do("GET", m.Output[0].URL, "", "Accept: application/fhir+ndjson").expect(t, http.StatusOK).body
			mw := await(t, w, w.base+path)
			got := download(t, w, mw)
			if len(got["Patient"]) != 3 {
				t.Fatalf("downloaded from w: %v", counts(got))
			}
			fromW := w.do("GET", mw.Output[0].URL, "", "Accept: application/fhir+ndjson").expect(t, http.StatusOK).body
			if string(fromA) != string(fromW) || strings.Count(string(fromA), "\n") != 3 {
				t.Fatalf("the two servers serve different files:\n%s\n%s", fromA, fromW)
			}
			r := a.do("GET", m.Output[0].URL, "", "Accept: application/fhir+ndjson", "Range: bytes=5-20").expect(t, http.StatusPartialContent)
			if string(r.body) != string(fromA[5:21]) {
				t.Errorf("range 5-20 = %q, want %q", r.body, fromA[5:21])
			}
			w.do("DELETE", w.base+path, "").expect(t, http.StatusAccepted)
			a.do("GET", status, "").expect(t, http.StatusNotFound)
			a.do("GET", m.Output[0].URL, "").expect(t, http.StatusNotFound)
			id := path[strings.LastIndex(path, "/")+1:]
			if keys, err := b.KV().List(t.Context(), "bulk/export/file/"+id+"/"); err != nil || len(keys) != 0 {
				t.Errorf("file records left after DELETE: %v, %v", keys, err)
			}
		})
	}
}
