package fhir

import (
	"fmt"
	"net/http"

	"github.com/anodyne-fhir/anodyne/conformance"
)

// This file is the one place where failures become HTTP statuses and
// OperationOutcome bodies. Handlers return *Error values (or storage
// sentinels, which are translated here); nothing else writes an error
// response.

// Error is a failure with the HTTP status and OperationOutcome issues the
// client should see.
type Error struct {
	Status int
	Issues []conformance.Issue
	// Header holds extra response headers (ETag of the current version on 412…).
	Header http.Header
	cause  error
}

func (e *Error) Error() string {
	if len(e.Issues) == 0 {
		return fmt.Sprintf("fhir: status %d", e.Status)
	}
	return fmt.Sprintf("fhir: status %d: %s", e.Status, e.Issues[0].Diagnostics)
}

func (e *Error) Unwrap() error { return e.cause }

// IssueType codes of the R4 issue-type value set used by this package.
const (
	codeInvalid    = "invalid"
	codeStructure  = "structure"
	codeNotFound   = "not-found"
	codeDeleted    = "deleted"
	codeConflict   = "conflict"
	codeNotSupp    = "not-supported"
	codeForbidden  = "forbidden"
	codeTooCostly  = "too-costly"
	codeException  = "exception"
	codeInfo       = "informational"
	codeBusiness   = "business-rule"
	codeInvariant  = "invariant"
	codeProcessing = "processing"
	codeTransient  = "transient"
	codeNoStore    = "no-store"
)

func newError(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Issues: []conformance.Issue{{
		Severity: "error", Code: code, Diagnostics: fmt.Sprintf(format, args...),
	}}}
}

func errBadRequest(format string, args ...any) *Error {
	return newError(http.StatusBadRequest, codeInvalid, format, args...)
}

func errNotFound(format string, args ...any) *Error {
	return newError(http.StatusNotFound, codeNotFound, format, args...)
}

// validationError turns validator issues into a response. Following R4
// http.html, a body that cannot be parsed or breaks the base specification's
// structural rules is 400; a resource that is well-formed but violates an
// invariant, a profile or a business rule is 422.
func validationError(issues []conformance.Issue) *Error {
	status := http.StatusBadRequest
	for _, is := range issues {
		if isErrorIssue(is) && (is.Code == codeBusiness || is.Code == codeInvariant) {
			status = http.StatusUnprocessableEntity
		}
	}
	return &Error{Status: status, Issues: issues}
}

func isErrorIssue(is conformance.Issue) bool {
	return is.Severity == "error" || is.Severity == "fatal"
}

// outcome builds an OperationOutcome resource from issues.
func outcome(issues []conformance.Issue) map[string]any {
	list := make([]any, 0, len(issues))
	for _, is := range issues {
		m := map[string]any{"severity": is.Severity, "code": is.Code}
		if m["severity"] == "" {
			m["severity"] = "error"
		}
		if m["code"] == "" {
			m["code"] = codeProcessing
		}
		if is.Diagnostics != "" {
			m["diagnostics"] = is.Diagnostics
		}
		if is.Expression != "" {
			m["expression"] = []any{is.Expression}
		}
		list = append(list, m)
	}
	if len(list) == 0 {
		list = append(list, map[string]any{"severity": "information", "code": codeInfo, "diagnostics": "All OK"})
	}
	return map[string]any{"resourceType": "OperationOutcome", "issue": list}
}
