package smart

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// OAuthError is an RFC 6749 error value. Handlers return it; one function
// turns it into a response.
type OAuthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
	Status      int    `json:"-"`
	// RetryAfter, in seconds, is sent as the Retry-After header (RFC 9110
	// 10.2.3) so that a client backs off for as long as the refusal lasts.
	RetryAfter int `json:"-"`
}

func (e *OAuthError) Error() string { return e.Code + ": " + e.Description }

// retryAfter returns a copy that asks the client to wait secs seconds.
func (e *OAuthError) retryAfter(secs int) *OAuthError {
	c := *e
	c.RetryAfter = secs
	return &c
}

// WithDescription returns a copy carrying a specific description.
func (e *OAuthError) WithDescription(d string) *OAuthError {
	c := *e
	c.Description = d
	return &c
}

// The RFC 6749 / RFC 7009 errors this server emits.
var (
	ErrInvalidRequest       = &OAuthError{Code: "invalid_request", Status: http.StatusBadRequest}
	ErrInvalidClient        = &OAuthError{Code: "invalid_client", Status: http.StatusUnauthorized}
	ErrInvalidGrant         = &OAuthError{Code: "invalid_grant", Status: http.StatusBadRequest}
	ErrUnauthorizedClient   = &OAuthError{Code: "unauthorized_client", Status: http.StatusBadRequest}
	ErrUnsupportedGrantType = &OAuthError{Code: "unsupported_grant_type", Status: http.StatusBadRequest}
	ErrInvalidScope         = &OAuthError{Code: "invalid_scope", Status: http.StatusBadRequest}
	ErrAccessDenied         = &OAuthError{Code: "access_denied", Status: http.StatusForbidden}
	ErrUnsupportedRespType  = &OAuthError{Code: "unsupported_response_type", Status: http.StatusBadRequest}
	ErrServerError          = &OAuthError{Code: "server_error", Status: http.StatusInternalServerError}
)

// writeOAuthError answers a token-style endpoint with the JSON error body.
func writeOAuthError(w http.ResponseWriter, err error) {
	var oe *OAuthError
	if !errors.As(err, &oe) {
		oe = ErrServerError.WithDescription("internal error")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	if oe.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(oe.RetryAfter))
	}
	if oe.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="anodyne"`)
	}
	w.WriteHeader(oe.Status)
	_ = json.NewEncoder(w).Encode(oe)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
