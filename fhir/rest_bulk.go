package fhir

// REST adapters: parse the HTTP request, call the interaction, encode
// its result. Only rest_*.go, server.go and content.go may import Echo
// (TestEngineFilesNoHTTPLayer).

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/conformance"
)

func (s *Server) exportSystem(c echo.Context) error {
	return s.kickOff(c, ExportRequest{Scope: "system"})
}

func (s *Server) exportPatients(c echo.Context) error {
	return s.kickOff(c, ExportRequest{Scope: "patient"})
}

// exportGroup exports the compartments of the Patients a Group lists in
// member.entity (the cohort is fixed at kick-off).
func (s *Server) exportGroup(c echo.Context) error {
	id, err := pathID(c, http.StatusNotFound)
	if err != nil {
		return err
	}
	return s.kickOff(c, ExportRequest{Scope: "group", GroupID: id})
}

// kickOff is the REST adapter of ExportKickOff: 202 with the status URL
// in Content-Location.
func (s *Server) kickOff(c echo.Context, r ExportRequest) error {
	r.Query, r.Strict, r.Async, r.URL = c.QueryParams(), preferToken(c, "handling") == "strict", preferAsync(c), s.requestURL(c)
	loc, oo, err := s.ExportKickOff(c.Request().Context(), r)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Content-Location", loc)
	return writeResource(c, http.StatusAccepted, oo)
}

// preferAsync reports whether Prefer carries the respond-async token.
func preferAsync(c echo.Context) bool {
	for _, h := range c.Request().Header.Values("Prefer") {
		for _, part := range strings.Split(h, ",") {
			for _, tok := range strings.Split(part, ";") {
				if strings.EqualFold(strings.TrimSpace(tok), "respond-async") {
					return true
				}
			}
		}
	}
	return false
}

// requestURL is the kick-off URL as the client sent it, on our public base.
func (s *Server) requestURL(c echo.Context) string {
	u := s.Base() + strings.TrimPrefix(c.Request().URL.Path, "/fhir")
	if raw := c.Request().URL.RawQuery; raw != "" {
		u += "?" + raw
	}
	return u
}

// exportStatus answers a status poll: 202 with progress while running,
// 200 with the manifest when done, 500 with the failure.
func (s *Server) exportStatus(c echo.Context) error {
	st, err := s.ExportJobStatus(c.Request().Context(), c.Param("job"))
	if err != nil {
		return err
	}
	h := c.Response().Header()
	if st.Running {
		h.Set("Retry-After", "1")
		h.Set("X-Progress", st.Progress)
		return c.NoContent(http.StatusAccepted)
	}
	h.Set("Expires", st.Expires.UTC().Format(http.TimeFormat))
	return c.JSON(http.StatusOK, st.Manifest)
}

// exportCancel handles DELETE on the status URL: the job stops and its
// files are removed.
func (s *Server) exportCancel(c echo.Context) error {
	oo, err := s.CancelExport(c.Request().Context(), c.Param("job"))
	if err != nil {
		return err
	}
	return writeResource(c, http.StatusAccepted, oo)
}

// exportFile serves one output file to the job's owner.
func (s *Server) exportFile(c echo.Context) error {
	f, finished, err := s.OpenExportFile(c.Request().Context(), c.Param("job"), c.Param("file"))
	if err != nil {
		return err
	}
	defer f.Close()
	c.Response().Header().Set(echo.HeaderContentType, MimeNDJSON)
	// The file never changes once listed: the job's end is its time.
	http.ServeContent(c.Response(), c.Request(), "", finished, f)
	return nil
}

// importNDJSON handles POST [base]/$import with an NDJSON body (one
// resource per line, ids kept): a synchronous bulk load for clients that
// push data (anodyne import --server), run by ImportNDJSON. The answer is
// an OperationOutcome with the counts and one issue per failed line.
func (s *Server) importNDJSON(c echo.Context) error {
	body, err := s.readBody(c, MimeNDJSON, "application/ndjson", "application/x-ndjson")
	if err != nil {
		return err
	}
	ctx, release, err := s.beginIdempotent(c, body)
	if err != nil {
		return err
	}
	defer release()
	rep, err := s.ImportNDJSON(ctx, body)
	if err != nil {
		return err
	}
	issues := []conformance.Issue{{
		Severity: "information", Code: CodeInformational,
		Diagnostics: fmt.Sprintf("imported %d resources, %d failed", rep.Stored, rep.Failed),
	}}
	for _, f := range rep.Failures {
		code := CodeProcessing
		if f.Forbidden {
			code = CodeForbidden
		}
		issues = append(issues, conformance.Issue{
			Severity: "error", Code: code,
			Diagnostics: fmt.Sprintf("line %d: %s", f.Line, f.Reason),
		})
	}
	status := http.StatusOK
	if rep.Stored == 0 && rep.Failed > 0 {
		status = http.StatusUnprocessableEntity
	}
	return writeResource(c, status, Outcome(issues))
}
