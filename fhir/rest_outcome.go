package fhir

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/storage"
)

// asError maps any error from a handler to an *Error. Storage sentinels
// that reach this point without a more specific handling keep a safe,
// generic meaning; anything unknown is a server fault (500) and is logged.
func asError(ctx context.Context, log *slog.Logger, err error) *Error {
	var fe *Error
	if errors.As(err, &fe) {
		return fe
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		return fromEchoError(he)
	}
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return errNotFound("resource not found")
	case errors.Is(err, storage.ErrVersionConflict):
		return newError(http.StatusConflict, codeConflict, "the resource was changed concurrently; retry")
	case errors.Is(err, storage.ErrDuplicateClaim):
		return newError(http.StatusConflict, codeConflict, "a matching resource already exists")
	case errors.Is(err, storage.ErrBadCursor):
		return errBadRequest("invalid or expired paging link")
	case errors.Is(err, storage.ErrUnsupported):
		return newError(http.StatusNotImplemented, codeNotSupp, "this request is not supported by the configured database: %v", err)
	case errors.Is(err, storage.ErrUnavailable):
		log.WarnContext(ctx, "database unavailable", "request_id", RequestID(ctx), "err", err)
		e := newError(http.StatusServiceUnavailable, codeTransient, "the database is unavailable; nothing was changed; retry shortly")
		e.Header = http.Header{"Retry-After": {"5"}}
		return e
	case errors.Is(err, storage.ErrFull):
		log.ErrorContext(ctx, "database full", "request_id", RequestID(ctx), "err", err)
		return newError(http.StatusInsufficientStorage, codeNoStore, "the database has no room for this change; nothing was changed")
	case errors.Is(err, context.DeadlineExceeded):
		return newError(http.StatusServiceUnavailable, codeTooCostly, "the request took too long")
	}
	log.ErrorContext(ctx, "request failed", "request_id", RequestID(ctx), "err", err)
	return &Error{Status: http.StatusInternalServerError, cause: err, Issues: []conformance.Issue{{
		Severity: "fatal", Code: codeException, Diagnostics: "internal server error",
	}}}
}

func fromEchoError(he *echo.HTTPError) *Error {
	msg := fmt.Sprint(he.Message)
	switch he.Code {
	case http.StatusNotFound:
		return newError(he.Code, codeNotFound, "no such route")
	case http.StatusMethodNotAllowed:
		return newError(he.Code, codeNotSupp, "method not allowed on this route")
	case http.StatusRequestEntityTooLarge:
		return newError(he.Code, codeTooCostly, "request body too large")
	case http.StatusUnsupportedMediaType:
		return newError(he.Code, codeNotSupp, "unsupported media type")
	case http.StatusUnauthorized:
		return newError(he.Code, "login", "%s", msg)
	case http.StatusForbidden:
		return newError(he.Code, codeForbidden, "%s", msg)
	}
	if he.Code >= 500 {
		return newError(he.Code, codeException, "%s", msg)
	}
	return newError(he.Code, codeProcessing, "%s", msg)
}

// errorHandler is Echo's HTTPErrorHandler: every error response, including
// Echo's own 404/405, leaves as an OperationOutcome.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	fe := asError(c.Request().Context(), s.log, err)
	h := c.Response().Header()
	for k, vs := range fe.Header {
		h[k] = vs
	}
	if werr := writeResource(c, fe.Status, outcome(fe.Issues)); werr != nil {
		s.log.ErrorContext(c.Request().Context(), "writing error response", "err", werr)
	}
}
