package fhir

import (
	"context"
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
// (http.html#history: request and response of the interaction). Under a
// view the entry speaks the view's id and dates: a deleted version, which
// has no content to derive them from, is left out (nil), and the stored
// lastModified gives way to the filtered meta.lastUpdated.
func (s *Server) historyEntry(ctx context.Context, v View, rec storage.Record) (map[string]any, error) {
	id := rec.ID
	lastModified := formatInstant(rec.LastUpdated)
	var body []byte
	if v != nil && rec.Deleted {
		return nil, nil
	}
	if !rec.Deleted {
		raw, vid, err := s.emit(ctx, v, nil, rec)
		if err != nil {
			return nil, err
		}
		body, id = raw, vid
		if v != nil {
			lastModified = filteredLastUpdated(raw)
		}
	}
	e := map[string]any{"fullUrl": s.resourceURL(rec.Type, id)}
	if body != nil {
		e["resource"] = json.RawMessage(body)
	}
	method := rec.Method
	if method == "" {
		method = http.MethodPut
	}
	url := rec.Type + "/" + id
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
	resp := map[string]any{
		"status":   status,
		"etag":     ETag(rec.VersionID),
		"location": rec.Type + "/" + id + "/_history/" + strconv.FormatInt(rec.VersionID, 10),
	}
	if lastModified != "" {
		resp["lastModified"] = lastModified
	}
	e["response"] = resp
	return e, nil
}

// filteredLastUpdated reads meta.lastUpdated of an emitted resource ("" when
// the view removed it).
func filteredLastUpdated(raw []byte) string {
	var r struct {
		Meta struct {
			LastUpdated string `json:"lastUpdated"`
		} `json:"meta"`
	}
	if json.Unmarshal(raw, &r) != nil {
		return ""
	}
	return r.Meta.LastUpdated
}
