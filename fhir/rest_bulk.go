package fhir

// REST adapters: parse the HTTP request, call the interaction, encode
// its result. Only rest_*.go, server.go and content.go may import Echo
// (TestEngineFilesNoHTTPLayer).

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

func (s *Server) exportSystem(c echo.Context) error {
	return s.kickOff(c, "system", nil)
}

func (s *Server) exportPatients(c echo.Context) error {
	return s.kickOff(c, "patient", nil)
}

// exportGroup exports the compartments of the Patients a Group lists in
// member.entity (the cohort is fixed at kick-off).
func (s *Server) exportGroup(c echo.Context) error {
	id, err := pathID(c, http.StatusNotFound)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	v, err := s.view(ctx)
	if err != nil {
		return err
	}
	spoken := id
	if id, err = s.storedID(ctx, v, "Group", id); err != nil {
		return err
	}
	cohort, err := s.groupCohort(ctx, id, spoken)
	if err != nil {
		return err
	}
	return s.kickOff(c, "group", cohort)
}

// kickOff validates the request, decides authorization per type, compiles
// every filter and persists the job (bulkdata export.html#bulk-data-kick-off-request).
// scope is "system", "patient" or "group" (with the cohort's patient ids).
func (s *Server) kickOff(c echo.Context, scope string, cohort []string) error {
	if s.bulk == nil {
		return newError(http.StatusNotImplemented, codeNotSupp, "bulk export is not enabled on this server (no export directory configured)")
	}
	if !preferAsync(c) {
		return errBadRequest("bulk export requires the header Prefer: respond-async")
	}
	ctx := c.Request().Context()
	owner, err := s.requester(ctx)
	if err != nil {
		return err
	}
	job, err := s.planExport(ctx, scope, cohort, c.QueryParams(), preferToken(c, "handling") == "strict")
	if err != nil {
		return err
	}
	job.Owner = owner
	v, err := s.view(ctx)
	if err != nil {
		return err
	}
	if v != nil {
		job.View = v.Name()
	}
	job.RequiresAccessToken = auth.FromContext(ctx) != nil
	job.Request = s.requestURL(c)
	if err := s.bulk.create(ctx, job); err != nil {
		return err
	}
	s.bulk.poke()
	s.jobEvent("export", "accepted")
	s.log.InfoContext(ctx, "bulk export queued", "job", job.ID, "scope", scope, "queries", len(job.Groups), "request_id", RequestID(ctx))
	c.Response().Header().Set("Content-Location", s.base+"/$export-status/"+job.ID)
	return writeResource(c, http.StatusAccepted, outcome([]conformance.Issue{{
		Severity: "information", Code: codeInfo, Diagnostics: "export job " + job.ID + " accepted",
	}}))
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
	u := s.base + strings.TrimPrefix(c.Request().URL.Path, "/fhir")
	if raw := c.Request().URL.RawQuery; raw != "" {
		u += "?" + raw
	}
	return u
}

// ownJob loads a job for its owner; anyone else gets 404, so that job ids
// of other clients cannot be probed.
func (s *Server) ownJob(c echo.Context) (exportJob, error) {
	if s.bulk == nil {
		return exportJob{}, errNotFound("bulk export is not enabled")
	}
	ctx := c.Request().Context()
	owner, err := s.requester(ctx)
	if err != nil {
		return exportJob{}, err
	}
	id := c.Param("job")
	if !ValidID(id) {
		return exportJob{}, errNotFound("no export job %q", id)
	}
	job, _, err := s.bulk.load(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return exportJob{}, errNotFound("no export job %q", id)
	}
	if err != nil {
		return exportJob{}, err
	}
	if job.Owner != owner {
		return exportJob{}, errNotFound("no export job %q", id)
	}
	return job, nil
}

// exportStatus answers a status poll: 202 with progress while running,
// 200 with the manifest when done, 500 with the failure.
func (s *Server) exportStatus(c echo.Context) error {
	job, err := s.ownJob(c)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	switch job.Status {
	case jobQueued, jobRunning:
		h.Set("Retry-After", "1")
		h.Set("X-Progress", fmt.Sprintf("%s: %d resources exported, %d of %d queries done", job.Status, job.Exported, job.Next, len(job.Groups)))
		return c.NoContent(http.StatusAccepted)
	case jobFailed:
		return newError(http.StatusInternalServerError, codeException, "export job %s failed: %s", job.ID, job.Failure)
	}
	output := make([]any, 0, len(job.Output))
	for _, o := range job.Output {
		output = append(output, map[string]any{
			"type":  o.Type,
			"url":   s.base + "/$export-file/" + job.ID + "/" + o.File,
			"count": o.Count,
		})
	}
	manifest := map[string]any{
		"transactionTime":     formatInstant(job.TransactionTime),
		"request":             job.Request,
		"requiresAccessToken": job.RequiresAccessToken,
		"output":              output,
		"error":               []any{},
	}
	h.Set("Expires", job.Finished.Add(exportRetention).UTC().Format(http.TimeFormat))
	return c.JSON(http.StatusOK, manifest)
}

// exportCancel handles DELETE on the status URL: the job stops and its
// files are removed.
func (s *Server) exportCancel(c echo.Context) error {
	job, err := s.ownJob(c)
	if err != nil {
		return err
	}
	if err := s.bulk.cancel(c.Request().Context(), job.ID); err != nil {
		return err
	}
	return writeResource(c, http.StatusAccepted, outcome([]conformance.Issue{{
		Severity: "information", Code: codeInfo, Diagnostics: "export job " + job.ID + " deleted",
	}}))
}

// exportFile serves one output file to the job's owner.
func (s *Server) exportFile(c echo.Context) error {
	job, err := s.ownJob(c)
	if err != nil {
		return err
	}
	name := c.Param("file")
	// Only files the manifest lists are served: the name never reaches
	// the file system unchecked.
	idx := slices.IndexFunc(job.Output, func(o exportOutput) bool { return o.File == name })
	if job.Status != jobDone || idx < 0 {
		return errNotFound("export job %s has no file %q", job.ID, name)
	}
	f, err := s.bulk.files.open(c.Request().Context(), job.ID, job.Output[idx])
	if err != nil {
		return err
	}
	defer f.Close()
	c.Response().Header().Set(echo.HeaderContentType, MimeNDJSON)
	// The file never changes once listed: the job's end is its time.
	http.ServeContent(c.Response(), c.Request(), "", job.Finished, f)
	return nil
}

// importNDJSON handles POST [base]/$import with an NDJSON body (one
// resource per line, ids kept): a synchronous bulk load for clients that
// push data (anodyne import --server). Every resource needs the caller's
// update permission. The answer is an OperationOutcome with the counts and
// one issue per failed line.
func (s *Server) importNDJSON(c echo.Context) error {
	body, err := s.readBody(c, MimeNDJSON, "application/ndjson", "application/x-ndjson")
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
