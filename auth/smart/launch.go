package smart

import (
	"encoding/json"
	"io"
	"net/http"

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
	var lc LaunchContext
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		return c.JSON(http.StatusBadRequest, ErrInvalidRequest.WithDescription("unreadable body"))
	}
	dec := json.NewDecoder(bytesReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&lc); err != nil {
		return c.JSON(http.StatusBadRequest, ErrInvalidRequest.WithDescription("body must be a launch context: "+err.Error()))
	}
	if lc.Patient == "" && lc.Encounter == "" && len(lc.FHIRContext) == 0 {
		return c.JSON(http.StatusBadRequest, ErrInvalidRequest.WithDescription("a launch context needs a patient, an encounter or fhirContext"))
	}
	launch := randomToken(24)
	if err := s.kv.putJSON(ctx, hashKey(pfxLaunch, launch), lc, launchTTL); err != nil {
		s.log.ErrorContext(ctx, "store launch", "err", err)
		return c.JSON(http.StatusInternalServerError, ErrServerError)
	}
	s.log.InfoContext(ctx, "launch context created", "client", client.ID, "patient", lc.Patient)
	return c.JSON(http.StatusCreated, map[string]any{"launch": launch, "iss": s.cfg.FHIRBase, "expires_in": int(launchTTL.Seconds())})
}
