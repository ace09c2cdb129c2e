package fhir

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/anodyne-fhir/anodyne/storage"
)

// newBundle starts a Bundle of the given type with links.
func newBundle(typ string, links []any) map[string]any {
	return map[string]any{
		"resourceType": "Bundle",
		"id":           randomID(),
		"meta":         map[string]any{"lastUpdated": formatInstant(now())},
		"type":         typ,
		"link":         links,
		"entry":        []any{},
	}
}

func addEntry(b map[string]any, entry map[string]any) {
	b["entry"] = append(b["entry"].([]any), entry)
}

// historyEntry describes one version in a history Bundle
// (http.html#history: request and response of the interaction).
func (s *Server) historyEntry(rec storage.Record) map[string]any {
	e := map[string]any{"fullUrl": s.resourceURL(rec.Type, rec.ID)}
	if !rec.Deleted {
		e["resource"] = json.RawMessage(rec.JSON)
	}
	method := rec.Method
	if method == "" {
		method = http.MethodPut
	}
	url := rec.Type + "/" + rec.ID
	status := "200 OK"
	switch {
	case method == http.MethodPost:
		url = rec.Type
		status = "201 Created"
	case method == http.MethodDelete:
		status = "204 No Content"
	case rec.VersionID == 1:
		status = "201 Created"
	}
	e["request"] = map[string]any{"method": method, "url": url}
	e["response"] = map[string]any{
		"status":       status,
		"etag":         etag(rec.VersionID),
		"lastModified": formatInstant(rec.LastUpdated),
		"location":     rec.Type + "/" + rec.ID + "/_history/" + strconv.FormatInt(rec.VersionID, 10),
	}
	return e
}
