package fhir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

// ExportRequest is a Bulk Data kick-off (bulkdata export.html#bulk-data-kick-off-request).
type ExportRequest struct {
	// Scope is "system", "patient" or "group".
	Scope string
	// GroupID is the Group of a group export, as the caller named it.
	GroupID string
	Query   url.Values
	Strict  bool // Prefer: handling=strict
	// Async is Prefer: respond-async, which the kick-off requires.
	Async bool
	// URL is the kick-off URL as the client sent it, on the public base
	// (the manifest's request).
	URL string
}

// ExportKickOff validates the request, decides authorization per type,
// compiles every filter and persists the job; it returns the job's
// status URL (Content-Location of the 202) and an OperationOutcome.
func (s *Server) ExportKickOff(ctx context.Context, r ExportRequest) (statusURL string, oo map[string]any, err error) {
	var cohort []string
	if r.Scope == "group" {
		v, err := s.view(ctx)
		if err != nil {
			return "", nil, err
		}
		id, err := s.storedID(ctx, v, "Group", r.GroupID)
		if err != nil {
			return "", nil, err
		}
		if cohort, err = s.groupCohort(ctx, id, r.GroupID); err != nil {
			return "", nil, err
		}
	}
	if s.bulk == nil {
		return "", nil, newError(http.StatusNotImplemented, codeNotSupp, "bulk export is not enabled on this server (no export directory configured)")
	}
	if !r.Async {
		return "", nil, errBadRequest("bulk export requires the header Prefer: respond-async")
	}
	owner, err := s.requester(ctx)
	if err != nil {
		return "", nil, err
	}
	job, err := s.planExport(ctx, r.Scope, cohort, r.Query, r.Strict)
	if err != nil {
		return "", nil, err
	}
	job.Owner = owner
	v, err := s.view(ctx)
	if err != nil {
		return "", nil, err
	}
	if v != nil {
		job.View = v.Name()
	}
	job.RequiresAccessToken = auth.FromContext(ctx) != nil
	job.Request = r.URL
	if err := s.bulk.create(ctx, job); err != nil {
		return "", nil, err
	}
	s.bulk.poke()
	s.jobEvent("export", "accepted")
	s.log.InfoContext(ctx, "bulk export queued", "job", job.ID, "scope", r.Scope, "queries", len(job.Groups), "request_id", RequestID(ctx))
	return s.base + "/$export-status/" + job.ID, outcome([]conformance.Issue{{
		Severity: "information", Code: codeInfo, Diagnostics: "export job " + job.ID + " accepted",
	}}), nil
}

// ownJob loads a job for its owner; anyone else gets 404, so that job ids
// of other clients cannot be probed.
func (s *Server) ownJob(ctx context.Context, id string) (exportJob, error) {
	if s.bulk == nil {
		return exportJob{}, errNotFound("bulk export is not enabled")
	}
	owner, err := s.requester(ctx)
	if err != nil {
		return exportJob{}, err
	}
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

// ExportStatus is the state of an export job as its owner polls it.
type ExportStatus struct {
	// Running: queued or running, with Progress (X-Progress); otherwise
	// done, with the Manifest and when the files expire.
	Running  bool
	Progress string
	Manifest map[string]any
	Expires  time.Time
}

// ExportJobStatus answers a status poll of the job's owner: running with
// progress, done with the manifest, a 500 *Error for a failed job.
func (s *Server) ExportJobStatus(ctx context.Context, id string) (ExportStatus, error) {
	job, err := s.ownJob(ctx, id)
	if err != nil {
		return ExportStatus{}, err
	}
	switch job.Status {
	case jobQueued, jobRunning:
		return ExportStatus{Running: true, Progress: fmt.Sprintf("%s: %d resources exported, %d of %d queries done", job.Status, job.Exported, job.Next, len(job.Groups))}, nil
	case jobFailed:
		return ExportStatus{}, newError(http.StatusInternalServerError, codeException, "export job %s failed: %s", job.ID, job.Failure)
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
	return ExportStatus{Manifest: manifest, Expires: job.Finished.Add(exportRetention)}, nil
}

// CancelExport stops the owner's job and removes its files; it returns
// the OperationOutcome of the 202.
func (s *Server) CancelExport(ctx context.Context, id string) (map[string]any, error) {
	job, err := s.ownJob(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.bulk.cancel(ctx, job.ID); err != nil {
		return nil, err
	}
	return outcome([]conformance.Issue{{
		Severity: "information", Code: codeInfo, Diagnostics: "export job " + job.ID + " deleted",
	}}), nil
}

// OpenExportFile opens one output file of the owner's finished job, with
// the time it was finished (the file never changes once listed). Only
// files the manifest lists are opened: the name never reaches the file
// system unchecked.
func (s *Server) OpenExportFile(ctx context.Context, id, name string) (io.ReadSeekCloser, time.Time, error) {
	job, err := s.ownJob(ctx, id)
	if err != nil {
		return nil, time.Time{}, err
	}
	idx := slices.IndexFunc(job.Output, func(o exportOutput) bool { return o.File == name })
	if job.Status != jobDone || idx < 0 {
		return nil, time.Time{}, errNotFound("export job %s has no file %q", job.ID, name)
	}
	f, err := s.bulk.files.open(ctx, job.ID, job.Output[idx])
	if err != nil {
		return nil, time.Time{}, err
	}
	return f, job.Finished, nil
}
