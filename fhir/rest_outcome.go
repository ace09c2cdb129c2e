package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"
)

// asError maps any error from a handler to an *Error: Echo's own errors
// (404/405 of the router, 413, 415, 401/403 of middleware) here, the rest
// by the engine's AsError.
func (s *Server) asError(ctx context.Context, err error) *Error {
	var fe *Error
	if errors.As(err, &fe) {
		return fe
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		return fromEchoError(he)
	}
	return s.AsError(ctx, err)
}

func fromEchoError(he *echo.HTTPError) *Error {
	msg := fmt.Sprint(he.Message)
	switch he.Code {
	case http.StatusNotFound:
		return NewError(he.Code, CodeNotFound, "no such route")
	case http.StatusMethodNotAllowed:
		return NewError(he.Code, CodeNotSupported, "method not allowed on this route")
	case http.StatusRequestEntityTooLarge:
		return NewError(he.Code, CodeTooCostly, "request body too large")
	case http.StatusUnsupportedMediaType:
		return NewError(he.Code, CodeNotSupported, "unsupported media type")
	case http.StatusUnauthorized:
		return NewError(he.Code, "login", "%s", msg)
	case http.StatusForbidden:
		return NewError(he.Code, CodeForbidden, "%s", msg)
	}
	if he.Code >= 500 {
		return NewError(he.Code, CodeException, "%s", msg)
	}
	return NewError(he.Code, CodeProcessing, "%s", msg)
}

// errorHandler is Echo's HTTPErrorHandler: every error response, including
// Echo's own 404/405, leaves as an OperationOutcome.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	fe := s.asError(c.Request().Context(), err)
	h := c.Response().Header()
	for k, vs := range fe.Header {
		h[k] = vs
	}
	if werr := writeResource(c, fe.Status, Outcome(fe.Issues)); werr != nil {
		s.Logger().ErrorContext(c.Request().Context(), "writing error response", "err", werr)
	}
}
