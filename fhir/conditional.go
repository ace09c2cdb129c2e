package fhir

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Conditional interactions (http.html#ccreate, #cond-update, #cdelete):
// a search decides which resource a write applies to. The search is the
// ordinary type search (parseSearch), in strict mode: a criterion the
// server would silently ignore could otherwise widen the match and make a
// conditional update overwrite, or a conditional delete remove, the wrong
// resource.
//
// Safety under concurrency comes from storage.Write.Claim: a create
// decided by "no match for criteria C" claims a key derived from the type
// and the canonical form of C, and the store lets only one live resource
// hold a key. Two identical requests racing (an RPM hub retrying a reading
// after a timeout) therefore create one resource; the loser sees the
// claim, searches again and finds the winner. The limit, by design: a
// claim protects identical criteria only. Two different searches that
// happen to match the same resource ("identifier=a|1" and
// "identifier=a|1&status=final") hold different keys and can both create.
// A claim also stays with the resource that took it until that resource is
// deleted, even if an update later changes what it matches (see
// createKeyed for how such a stale claim is tolerated).

// ConditionalParams parses conditional criteria ("identifier=a|1", with or
// without a leading "Type?" or "?") and drops the formatting parameters,
// which do not select anything.
func ConditionalParams(typ, criteria string) (url.Values, error) {
	criteria = strings.TrimPrefix(criteria, typ)
	criteria = strings.TrimPrefix(criteria, "?")
	q, err := url.ParseQuery(criteria)
	if err != nil {
		return nil, errBadRequest("conditional criteria %q are not a valid query string: %v", criteria, err)
	}
	for _, k := range []string{"_format", "_pretty", cursorParam, "_count", "_sort", "_total", "_summary"} {
		q.Del(k)
	}
	if len(q) == 0 {
		return nil, errBadRequest("conditional criteria %q select nothing: at least one search parameter is required", criteria)
	}
	return q, nil
}

// claimKey is the Claim a create decided by criteria q holds.
func claimKey(typ string, q url.Values) string {
	h := sha256.Sum256([]byte(typ + "?" + canonicalQuery(q)))
	return "cond:" + hex.EncodeToString(h[:])
}

// matches runs conditional criteria as a search of typ limited to the
// caller's access and returns at most limit current resources.
func (s *Server) matches(ctx context.Context, typ string, q url.Values, limit int) ([]storage.Record, error) {
	dec, err := s.decide(ctx, ActionSearch, typ)
	if err != nil {
		return nil, err
	}
	req, err := s.compileSearch(ctx, s.newSearchDecisions(), []string{typ}, q, true)
	if err != nil {
		return nil, err
	}
	if len(req.Filters) == 0 {
		return nil, errBadRequest("conditional criteria select nothing")
	}
	filters := req.Filters
	if dec.Filter != nil {
		filters = append(filters, dec.Filter)
	}
	var filter storage.Expr = storage.And{Exprs: filters}
	if len(filters) == 1 {
		filter = filters[0]
	}
	page, err := s.backend.Search(ctx, storage.Query{Types: []string{typ}, Filter: filter, Count: limit})
	if err != nil {
		return nil, fmt.Errorf("conditional search %s?%s: %w", typ, canonicalQuery(q), err)
	}
	return page.Records, nil
}

// tooMany is the answer when criteria match several resources and the
// interaction needs one (412, as http.html prescribes).
func tooMany(typ string, q url.Values) *Error {
	return newError(http.StatusPreconditionFailed, codeConflict,
		"the criteria %s?%s match more than one resource", typ, canonicalQuery(q))
}
