package smart

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/labstack/echo/v4"
)

// createLaunch lets an EHR (a client registered with launch_ehr, calling
// with one of our access tokens, typically from backend services) create
// a launch context. It answers the opaque launch value to pass to the app.
func (s *Server) createLaunch(c echo.Context) error {
	r := c.Request()
	ctx := r.Context()
	raw, ok := auth.BearerToken(r)
	if !ok {
		auth.WriteUnauthorized(c.Response(), s.cfg.BaseURL, "", "a bearer token is required")
		return nil
	}
	p, err := s.verifier.Verify(ctx, raw)
	if err != nil {
		auth.WriteUnauthorized(c.Response(), s.cfg.BaseURL, "invalid_token", "the bearer token is invalid")
		return nil
	}
	client, err := s.clients.Get(ctx, p.ClientID)
	if err != nil || !client.LaunchEHR {
		auth.WriteForbidden(c.Response(), "this client may not create launch contexts")
		return nil
	}
	var in struct {
		LaunchContext
		ClientID string `json:"client_id"`
		User     string `json:"user"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		return c.JSON(http.StatusBadRequest, ErrInvalidRequest.WithDescription("unreadable body"))
	}
	dec := json.NewDecoder(bytesReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return c.JSON(http.StatusBadRequest, ErrInvalidRequest.WithDescription("body must be a launch context: "+err.Error()))
	}
	lc := in.LaunchContext
	if lc.Patient == "" && lc.Encounter == "" && len(lc.FHIRContext) == 0 {
		return c.JSON(http.StatusBadRequest, ErrInvalidRequest.WithDescription("a launch context needs a patient, an encounter or fhirContext"))
	}
	// The launch value travels through the browser, so it must not be a
	// bearer secret: it is bound to the app the EHR is launching.
	if in.ClientID == "" {
		return c.JSON(http.StatusBadRequest, ErrInvalidRequest.WithDescription("client_id (the application being launched) is required"))
	}
	app, err := s.clients.Get(ctx, in.ClientID)
	switch {
	case notFound(err):
		return c.JSON(http.StatusBadRequest, ErrInvalidRequest.WithDescription("client_id names no registered application"))
	case err != nil:
		s.log.ErrorContext(ctx, "load launched client", "err", err)
		return c.JSON(http.StatusInternalServerError, ErrServerError)
	case !auth.ParseScopes(app.Scopes).Has("launch"):
		return c.JSON(http.StatusBadRequest, ErrInvalidRequest.WithDescription("the application is not registered for the launch scope"))
	}
	rec := launchRecord{Context: lc, ClientID: app.ID, User: in.User}
	launch := randomToken(24)
	if err := s.kv.putJSON(ctx, hashKey(pfxLaunch, launch), rec, launchTTL); err != nil {
		s.log.ErrorContext(ctx, "store launch", "err", err)
		return c.JSON(http.StatusInternalServerError, ErrServerError)
	}
	s.log.InfoContext(ctx, "launch context created", "ehr", client.ID, "client", app.ID, "user", in.User, "patient", lc.Patient)
	return c.JSON(http.StatusCreated, map[string]any{"launch": launch, "iss": s.cfg.FHIRBase, "expires_in": int(launchTTL.Seconds())})
}

// launchRecord is a stored launch: the context and who may redeem it.
// It lives for launchTTL and is taken (deleted) by the one authorize
// request that uses it.
type launchRecord struct {
	Context  LaunchContext `json:"context"`
	ClientID string        `json:"client_id"`
	// User, when the EHR names one, is the user name or fhirUser reference
	// of the only account that may complete the launch.
	User string `json:"user,omitempty"`
}

// launchUserMatches reports whether the signed-in account is the user the
// EHR launched for (any user when it named none).
func launchUserMatches(want, subject string, acct *Account) bool {
	return want == "" || strings.EqualFold(want, subject) || (acct.FHIRUser != "" && want == acct.FHIRUser)
}
