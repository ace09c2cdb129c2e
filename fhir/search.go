package fhir

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
)

// searchRequest is a parsed search: what selects (Filter), what orders and
// pages, and the parameters that were understood (for the self link).
// Result parameters that are not implemented yet (_include, _revinclude,
// _summary other than count, _elements) are treated as unknown parameters;
// they will become fields here, filled by parseSearch and honoured by
// searchType, without changing the pipeline.
type searchRequest struct {
	Filters []storage.Expr
	Sort    []storage.Sort
	Count   int
	Total   bool
	Cursor  string
	// Kept holds the parameters that were applied, as they go in links.
	Kept url.Values
}

// searchType handles GET [base]/[type]?params and POST [base]/[type]/_search.
func (s *Server) searchType(c echo.Context) error {
	typ, err := resourceType(c)
	if err != nil {
		return err
	}
	params, err := s.searchParams(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	dec, err := s.decide(ctx, ActionSearch, typ)
	if err != nil {
		return err
	}
	req, err := s.parseSearch(typ, params, preferToken(c, "handling") == "strict")
	if err != nil {
		return err
	}
	path := "/" + typ
	query := canonicalQuery(req.Kept)
	binding := "search " + path + "?" + query
	if tok := params.Get(cursorParam); tok != "" {
		if req.Cursor, err = s.openCursor(binding, tok); err != nil {
			return err
		}
	}
	filters := req.Filters
	if dec.Filter != nil {
		// Authorization composes with the query: the database never
		// returns what the caller may not see.
		filters = append(filters, dec.Filter)
	}
	var filter storage.Expr
	switch len(filters) {
	case 0:
	case 1:
		filter = filters[0]
	default:
		filter = storage.And{Exprs: filters}
	}
	page, err := s.backend.Search(ctx, storage.Query{
		Types: []string{typ}, Filter: filter, Sort: req.Sort,
		Count: req.Count, Cursor: req.Cursor, Total: req.Total,
	})
	if err != nil {
		return fmt.Errorf("search %s: %w", typ, err)
	}
	b := newBundle("searchset", s.pageLinks(path, binding, query, page.Next))
	if req.Total && page.Total >= 0 {
		b["total"] = page.Total
	}
	for _, rec := range page.Records {
		addEntry(b, s.searchEntry(rec, "match"))
	}
	guard := s.newGuard(ActionSearch)
	for _, rec := range page.Included {
		ok, err := guard.allows(ctx, rec)
		if err != nil {
			return err
		}
		if ok {
			addEntry(b, s.searchEntry(rec, "include"))
		}
	}
	return writeResource(c, http.StatusOK, b)
}

func (s *Server) searchEntry(rec storage.Record, mode string) map[string]any {
	return map[string]any{
		"fullUrl":  s.resourceURL(rec.Type, rec.ID),
		"resource": json.RawMessage(rec.JSON),
		"search":   map[string]any{"mode": mode},
	}
}

// searchParams returns the query parameters, plus for POST _search the
// form-encoded body (http.html#search: both are allowed and combine).
func (s *Server) searchParams(c echo.Context) (url.Values, error) {
	params := c.QueryParams()
	r := c.Request()
	if r.Method != http.MethodPost {
		return params, nil
	}
	if ct := r.Header.Get(echo.HeaderContentType); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != mimeForm {
			return nil, newError(http.StatusUnsupportedMediaType, codeNotSupp, "POST _search takes %s, not %q", mimeForm, ct)
		}
	}
	r.Body = http.MaxBytesReader(c.Response(), r.Body, s.maxBody)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, newError(http.StatusRequestEntityTooLarge, codeTooCostly, "request body exceeds %d bytes", s.maxBody)
		}
		return nil, errBadRequest("unreadable form body: %v", err)
	}
	out := url.Values{}
	for k, vs := range params {
		out[k] = append(out[k], vs...)
	}
	for k, vs := range r.PostForm {
		out[k] = append(out[k], vs...)
	}
	return out, nil
}

// parseSearch compiles the parameters of a type search. Unknown or
// unsupported parameters are dropped (and so absent from the self link,
// which is how FHIR tells the client they were ignored), or rejected with
// 400 under Prefer: handling=strict.
func (s *Server) parseSearch(typ string, params url.Values, strict bool) (searchRequest, error) {
	req := searchRequest{Count: defaultCount, Kept: url.Values{}}
	ignore := func(name, why string) error {
		if strict {
			return errBadRequest("search parameter %q: %s", name, why)
		}
		return nil
	}
	for name, values := range params {
		switch name {
		case cursorParam, "_format", "_pretty":
			continue
		case "_count":
			n, err := countParam(params)
			if err != nil {
				return req, err
			}
			req.Count = n
			if n == 0 {
				req.Total = true
			}
			req.Kept.Set(name, params.Get(name))
			continue
		case "_total":
			switch v := params.Get(name); v {
			case "none":
			case "accurate", "estimate":
				req.Total = true
			default:
				return req, errBadRequest("_total must be none, estimate or accurate, not %q", v)
			}
			req.Kept.Set(name, params.Get(name))
			continue
		case "_summary":
			if params.Get(name) == "count" {
				req.Count, req.Total = 0, true
				req.Kept.Set(name, "count")
				continue
			}
			if err := ignore(name, "only _summary=count is supported"); err != nil {
				return req, err
			}
			continue
		case "_sort":
			sorts, err := s.parseSort(typ, params.Get(name))
			if err != nil {
				if strict {
					return req, errBadRequest("%v", err)
				}
				continue
			}
			req.Sort = sorts
			req.Kept.Set(name, params.Get(name))
			continue
		}
		code, modifier, _ := strings.Cut(name, ":")
		if strings.ContainsAny(code, ".") || strings.HasPrefix(code, "_has") {
			if err := ignore(name, "chained and reverse-chained parameters are not supported yet"); err != nil {
				return req, err
			}
			continue
		}
		if code == "_id" && modifier == "" {
			for _, v := range values {
				req.Filters = append(req.Filters, storage.IDs{IDs: strings.Split(v, ",")})
			}
			req.Kept[name] = values
			continue
		}
		if _, ok := s.registry.Param(typ, code); !ok {
			if err := ignore(name, "not a search parameter of "+typ); err != nil {
				return req, err
			}
			continue
		}
		e, err := s.registry.Compile(typ, code, modifier, values)
		if err != nil {
			if !strict && errors.Is(err, resources.ErrUnsupported) {
				continue
			}
			return req, errBadRequest("search parameter %s: %v", name, err)
		}
		req.Filters = append(req.Filters, e)
		req.Kept[name] = values
	}
	return req, nil
}

// parseSort reads _sort=a,-b (search.html#sort).
func (s *Server) parseSort(typ, v string) ([]storage.Sort, error) {
	var out []storage.Sort
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		desc := strings.HasPrefix(f, "-")
		code := strings.TrimPrefix(f, "-")
		p, ok := s.registry.Param(typ, code)
		if !ok || p.Type == 0 {
			return nil, fmt.Errorf("_sort: %q is not a sortable parameter of %s: %w", code, typ, resources.ErrUnknownParam)
		}
		out = append(out, storage.Sort{Param: code, Kind: p.Type, Desc: desc})
	}
	return out, nil
}
