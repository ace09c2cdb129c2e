package fhir

// REST adapters: parse the HTTP request, call the interaction, encode
// its result. Only rest_*.go, server.go and content.go may import Echo
// (TestEngineFilesNoHTTPLayer).

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/storage"
)

// readRequestOf is the ReadRequest of an HTTP request.
func readRequestOf(c echo.Context) ReadRequest {
	names, values := c.ParamNames(), c.ParamValues()
	path := make(map[string]string, len(names))
	for i, n := range names {
		if i < len(values) {
			path[n] = values[i]
		}
	}
	h := c.Request().Header
	return ReadRequest{
		Path: path, Query: c.QueryParams(), Strict: preferToken(c, "handling") == "strict",
		IfNoneMatch: h.Get("If-None-Match"), IfModifiedSince: h.Get("If-Modified-Since"),
	}
}

// serveRead is the REST adapter of a read interaction.
func (s *Server) serveRead(c echo.Context, fn ReadFunc) error {
	return s.serveReadRequest(c, fn, readRequestOf(c))
}

// serveReadRequest is serveRead of a request the handler completed (a
// POSTed operation's parameters or body).
func (s *Server) serveReadRequest(c echo.Context, fn ReadFunc, rq ReadRequest) error {
	r, err := fn(s, c.Request().Context(), rq)
	if err != nil {
		return err
	}
	return respondRead(c, r)
}

// respondRead answers a ReadResult over HTTP.
func respondRead(c echo.Context, r ReadResult) error {
	if r.Rec != nil {
		h := c.Response().Header()
		h.Set("ETag", ETag(r.Rec.VersionID))
		if !r.HideModified {
			h.Set(echo.HeaderLastModified, r.Rec.LastUpdated.UTC().Format(http.TimeFormat))
		}
	}
	if r.Status == http.StatusNotModified {
		return c.NoContent(http.StatusNotModified)
	}
	return writeRaw(c, r.Status, r.Raw)
}

// read handles GET [base]/[type]/[id]: the current version, 410 when it is
// deleted, 304 when the client's copy is current (If-None-Match,
// If-Modified-Since).
func (s *Server) read(c echo.Context) error { return s.serveRead(c, (*Server).Read) }

// vread handles GET [base]/[type]/[id]/_history/[vid].
func (s *Server) vread(c echo.Context) error { return s.serveRead(c, (*Server).VRead) }

// serveRecord answers with one stored version the caller is allowed to
// read (d), through its view v, honouring conditional-read headers.
func (s *Server) serveRecord(c echo.Context, d Decision, v View, rec storage.Record) error {
	r, err := s.RecordResult(c.Request().Context(), readRequestOf(c), d, v, rec)
	if err != nil {
		return err
	}
	return respondRead(c, r)
}

// historyInstance handles GET [base]/[type]/[id]/_history.
func (s *Server) historyInstance(c echo.Context) error {
	return s.serveRead(c, (*Server).HistoryInstance)
}

// historyType handles GET [base]/[type]/_history.
func (s *Server) historyType(c echo.Context) error {
	return s.serveRead(c, (*Server).HistoryType)
}

// historySystem handles GET [base]/_history.
func (s *Server) historySystem(c echo.Context) error {
	return s.serveRead(c, (*Server).HistorySystem)
}

// searchType handles GET [base]/[type]?params and POST [base]/[type]/_search.
func (s *Server) searchType(c echo.Context) error {
	if _, err := resourceType(c); err != nil {
		return err
	}
	return s.search(c, (*Server).SearchType)
}

// searchSystem handles GET [base]?_type=… and POST [base]/_search.
func (s *Server) searchSystem(c echo.Context) error {
	return s.search(c, (*Server).SearchSystem)
}

// search answers a search over HTTP, with the parameters of the query
// and, for POST _search, of the form body.
func (s *Server) search(c echo.Context, fn ReadFunc) error {
	params, err := s.searchParams(c)
	if err != nil {
		return err
	}
	r := readRequestOf(c)
	r.Query = params
	return s.serveReadRequest(c, fn, r)
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
			return nil, NewError(http.StatusUnsupportedMediaType, CodeNotSupported, "POST _search takes %s, not %q", mimeForm, ct)
		}
	}
	r.Body = http.MaxBytesReader(c.Response(), r.Body, s.MaxBodyBytes())
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, NewError(http.StatusRequestEntityTooLarge, CodeTooCostly, "request body exceeds %d bytes", s.MaxBodyBytes())
		}
		return nil, BadRequest("unreadable form body: %v", err)
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

// searchCompartment handles GET [base]/[Compartment]/[id]/[type]?params and
// [type] = "*" (http.html#vsearch): a search restricted, per type, to the
// resources that the compartment definition links to the focal resource.
func (s *Server) searchCompartment(c echo.Context) error {
	return s.serveRead(c, (*Server).SearchCompartment)
}

// everything handles GET [base]/Patient/[id]/$everything.
func (s *Server) everything(c echo.Context) error {
	return s.serveRead(c, (*Server).Everything)
}

// everythingType handles GET [base]/Patient/$everything: the same for
// every patient the caller may see.
func (s *Server) everythingType(c echo.Context) error {
	return s.serveRead(c, (*Server).EverythingType)
}

// lastn handles GET and POST [base]/Observation/$lastn: the REST adapter
// of lastnRead (a POST body's parameters join the query's).
func (s *Server) lastn(c echo.Context) error {
	params, err := s.lastnParams(c)
	if err != nil {
		return err
	}
	r := readRequestOf(c)
	r.Query = params
	res, err := s.LastN(c.Request().Context(), r)
	if err != nil {
		return err
	}
	return respondRead(c, res)
}

// lastnParams reads the parameters: the query string, plus for POST a
// form body or a Parameters resource.
func (s *Server) lastnParams(c echo.Context) (url.Values, error) {
	return s.operationParams(c, "$lastn")
}

// operationParams reads the parameters of operation op: the query string,
// plus for POST a form body or a Parameters resource (operations.html#request).
// Each parameter of the resource carries a primitive value, or a Coding
// (read as system|code), a Period (start/end) or a Reference (its
// reference), the forms these take in a query string.
func (s *Server) operationParams(c echo.Context, op string) (url.Values, error) {
	r := c.Request()
	mt, _, _ := mime.ParseMediaType(r.Header.Get(echo.HeaderContentType))
	if r.Method != http.MethodPost || mt == "" || mt == mimeForm {
		return s.searchParams(c)
	}
	if mt != "application/fhir+json" && mt != "application/json" {
		return nil, NewError(http.StatusUnsupportedMediaType, CodeNotSupported, "POST %s takes a Parameters resource (application/fhir+json) or %s, not %q", op, mimeForm, mt)
	}
	raw, err := io.ReadAll(http.MaxBytesReader(c.Response(), r.Body, s.MaxBodyBytes()))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, NewError(http.StatusRequestEntityTooLarge, CodeTooCostly, "request body exceeds %d bytes", s.MaxBodyBytes())
		}
		return nil, BadRequest("unreadable body: %v", err)
	}
	doc, err := DecodeJSON(raw)
	if err != nil {
		return nil, BadRequest("%s body: %v", op, err)
	}
	res, _ := doc.(map[string]any)
	return ParametersQuery(op, c.QueryParams(), res)
}

// stats handles GET and POST [base]/Observation/$stats.
func (s *Server) stats(c echo.Context) error {
	params, err := s.operationParams(c, "$stats")
	if err != nil {
		return err
	}
	r := readRequestOf(c)
	r.Query = params
	res, err := s.Stats(c.Request().Context(), r)
	if err != nil {
		return err
	}
	return respondRead(c, res)
}

// patientOperation handles GET [base]/Patient/{id}/$name.
func (s *Server) patientOperation(op PatientOperation) echo.HandlerFunc {
	return func(c echo.Context) error {
		r, err := s.RunPatientOperation(c.Request().Context(), op, readRequestOf(c))
		if err != nil {
			return err
		}
		return respondRead(c, r)
	}
}

// operationDefinitionRead serves the OperationDefinitions of the patient
// operations at [base]/OperationDefinition/{id}; other ids are ordinary
// stored resources.
func (s *Server) operationDefinitionRead(c echo.Context) error {
	r := readRequestOf(c)
	r.Path["type"] = "OperationDefinition"
	res, err := s.ReadOperationDefinition(c.Request().Context(), r)
	if err != nil {
		return err
	}
	return respondRead(c, res)
}

// resourceOperation handles GET and POST [base]/Type/{id}/$name.
func (s *Server) resourceOperation(op ResourceOperation) echo.HandlerFunc {
	return func(c echo.Context) error {
		params, err := s.lastnParams(c) // query string, form or Parameters body
		if err != nil {
			return err
		}
		rq := readRequestOf(c)
		rq.Query = params
		r, err := s.RunResourceOperation(c.Request().Context(), op, rq)
		if err != nil {
			return err
		}
		return respondRead(c, r)
	}
}

// capabilities handles GET [base]/metadata.
func (s *Server) capabilities(c echo.Context) error {
	return s.serveRead(c, (*Server).Capabilities)
}

// validateType handles POST [base]/[type]/$validate.
func (s *Server) validateType(c echo.Context) error {
	if _, err := resourceType(c); err != nil {
		return err
	}
	body, err := s.readBody(c, mimeFHIRJSON, mimeJSON)
	if err != nil {
		return err
	}
	r := readRequestOf(c)
	r.Body = body
	return s.serveReadRequest(c, (*Server).ValidateType, r)
}

// validateInstance handles POST [base]/[type]/[id]/$validate: the body
// when there is one (its id must be the URL's), else the stored version.
func (s *Server) validateInstance(c echo.Context) error {
	if _, _, err := instancePath(c, http.StatusNotFound); err != nil {
		return err
	}
	r := readRequestOf(c)
	if c.Request().ContentLength != 0 {
		body, err := s.readBody(c, mimeFHIRJSON, mimeJSON)
		if err != nil {
			return err
		}
		if body == nil {
			body = []byte{}
		}
		r.Body = body
	}
	return s.serveReadRequest(c, (*Server).ValidateInstance, r)
}

// reindexStatus handles GET [base]/SearchParameter/[id]/$reindex-status.
func (s *Server) reindexStatus(c echo.Context) error {
	return s.serveRead(c, (*Server).ReindexStatus)
}

// resourceTypeOperation handles GET and POST [base]/Type/$name.
func (s *Server) resourceTypeOperation(op ResourceOperation) echo.HandlerFunc {
	return func(c echo.Context) error {
		params, err := s.lastnParams(c)
		if err != nil {
			return err
		}
		rq := readRequestOf(c)
		rq.Query = params
		r, err := s.RunResourceTypeOperation(c.Request().Context(), op, rq)
		if err != nil {
			return err
		}
		return respondRead(c, r)
	}
}
