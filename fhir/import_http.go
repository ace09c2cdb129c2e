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
	// With an Idempotency-Key, a copy of a request that was partly or
	// wholly committed is run again as a replay: what is stored already
	// with the same content gets no new version, so the answer (counts,
	// failed lines) is the one the first copy would have given. The key's
	// record, stored once the request is through, only ties the key to
	// this body.
	ctx, release, err := s.beginIdempotent(c, body)
	if err != nil {
		return err
	}
	defer release()
	sc := idemFrom(ctx)
	im := &Importer{s: s, authorize: s.authz != nil, replay: sc != nil}
	var rep ImportReport
	src := &importSource{name: "request"}
	err = im.run(ctx, src, ndjsonUnits(bytes.NewReader(body)), ImportOptions{}, &rep, nil, func(int64) {})
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	if sc != nil {
		markIdempotent(ctx, nil)
		s.settle(ctx)
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
