package fhir

import (
	"encoding/json"
	"net/url"
)

// Search paging links. Backend cursors are keyset positions and only go
// forward, so a search token carries the stack of positions that led to
// its page: "next" pushes the backend's cursor, "previous" pops one, and
// re-running an earlier position shows that page as the data is now. The
// stack is sealed like every cursor (signed, bound to the query), so it
// can neither be forged nor moved to another query.

// maxPageStack bounds the token size; beyond it the oldest positions are
// dropped and "previous" stops where the kept history starts.
const maxPageStack = 32

// pageStack is the decoded content of a search paging token.
type pageStack struct {
	// Positions are backend cursors; the last one produced this page.
	Positions []string `json:"c"`
	// Truncated: older positions were dropped, so the first kept one is
	// not the first page.
	Truncated bool `json:"t,omitempty"`
}

// openPageStack reads the token of a search request (empty: first page).
func (s *Server) openPageStack(binding, token string) (pageStack, error) {
	var ps pageStack
	if token == "" {
		return ps, nil
	}
	raw, err := s.openCursor(binding, token)
	if err != nil {
		return ps, err
	}
	if err := json.Unmarshal([]byte(raw), &ps); err != nil || len(ps.Positions) == 0 {
		return pageStack{}, errBadRequest("invalid paging cursor")
	}
	return ps, nil
}

func (s *Server) sealPageStack(binding string, ps pageStack) string {
	raw, _ := json.Marshal(ps) // strings and a bool: cannot fail
	return s.sealCursor(binding, string(raw))
}

// searchLinks builds self, previous and next for a page at path with the
// canonical query; cur is the stack that produced the page and next the
// backend's cursor for the following one.
func (s *Server) searchLinks(path, binding, query string, cur pageStack, next string) []any {
	base := s.base + path
	if query != "" {
		base += "?" + query
	}
	withToken := func(ps pageStack) string {
		sep := "?"
		if query != "" {
			sep = "&"
		}
		return base + sep + cursorParam + "=" + url.QueryEscape(s.sealPageStack(binding, ps))
	}
	link := func(rel, u string) any { return map[string]any{"relation": rel, "url": u} }
	self := base
	if len(cur.Positions) > 0 {
		self = withToken(cur)
	}
	links := []any{link("self", self)}
	switch n := len(cur.Positions); {
	case n == 1 && !cur.Truncated:
		links = append(links, link("previous", base))
	case n > 1:
		links = append(links, link("previous", withToken(pageStack{Positions: cur.Positions[:n-1], Truncated: cur.Truncated})))
	}
	if next != "" {
		ns := pageStack{Positions: append(append([]string(nil), cur.Positions...), next), Truncated: cur.Truncated}
		if len(ns.Positions) > maxPageStack {
			ns.Positions = ns.Positions[len(ns.Positions)-maxPageStack:]
			ns.Truncated = true
		}
		links = append(links, link("next", withToken(ns)))
	}
	return links
}
