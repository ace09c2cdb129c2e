package fhir

import (
	"bytes"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/conformance"
)

// importNDJSON handles POST [base]/$import with an NDJSON body (one
// resource per line, ids kept): a synchronous bulk load for clients that
// push data (anodyne import --server). Every resource needs the caller's
// update permission. The answer is an OperationOutcome with the counts and
// one issue per failed line.
func (s *Server) importNDJSON(c echo.Context) error {
	body, err := s.readBody(c, mimeNDJSON, "application/ndjson", "application/x-ndjson")
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	im := &Importer{s: s, authorize: s.authz != nil}
	var rep ImportReport
	src := &importSource{name: "request"}
	err = im.run(ctx, src, ndjsonUnits(bytes.NewReader(body)), ImportOptions{}, &rep, nil, func(int64) {})
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	issues := []conformance.Issue{{
		Severity: "information", Code: codeInfo,
		Diagnostics: fmt.Sprintf("imported %d resources, %d failed", rep.Stored, rep.Failed),
	}}
	for _, f := range rep.Failures {
		code := codeProcessing
		if f.Forbidden {
			code = codeForbidden
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
	return writeResource(c, status, outcome(issues))
}
