package smart

import (
	"encoding/json"
	"io"
	"net/http"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/labstack/echo/v4"
)

// clientRegistration is the admin API's view of a client: the stored
// fields plus an optional clear-text secret on input.
type clientRegistration struct {
	Client
	Secret string `json:"client_secret,omitempty"`
}

func (s *Server) adminGuard(c echo.Context) bool {
	if !s.adminAuthorized(c.Request()) {
		auth.WriteUnauthorized(c.Response(), s.cfg.BaseURL, "invalid_token", "the admin API needs the admin token")
		return false
	}
	return true
}

func (s *Server) adminList(c echo.Context) error {
	if !s.adminGuard(c) {
		return nil
	}
	cl, err := s.clients.List(c.Request().Context())
	if err != nil {
		s.log.ErrorContext(c.Request().Context(), "admin: list clients", "err", err)
		return c.JSON(http.StatusInternalServerError, ErrServerError)
	}
	// ?research_project=NAME lists that project's clients; an empty value
	// lists every research client.
	project, byProject := c.QueryParams()["research_project"]
	out := make([]*Client, 0, len(cl))
	for _, x := range cl {
		x.SecretHash = ""
		if byProject && (x.ResearchProject == "" || (project[0] != "" && x.ResearchProject != project[0])) {
			continue
		}
		out = append(out, x)
	}
	return c.JSON(http.StatusOK, out)
}

// adminPut registers or replaces a client. A symmetric client without a
// secret gets a generated one, returned once in the response.
func (s *Server) adminPut(c echo.Context) error {
	if !s.adminGuard(c) {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(c.Request().Body, 256<<10))
	if err != nil {
		return c.JSON(http.StatusBadRequest, ErrInvalidRequest.WithDescription("unreadable body"))
	}
	var reg clientRegistration
	if err := json.Unmarshal(body, &reg); err != nil {
		return c.JSON(http.StatusBadRequest, ErrInvalidRequest.WithDescription("body must be a client: "+err.Error()))
	}
	secret, err := RegisterClient(c.Request().Context(), s.clients, &reg.Client, reg.Secret)
	if err != nil {
		return c.JSON(http.StatusBadRequest, ErrInvalidRequest.WithDescription(err.Error()))
	}
	out := map[string]any{"client_id": reg.ID, "type": reg.Type}
	if secret != "" && reg.Secret == "" {
		out["client_secret"] = secret
	}
	return c.JSON(http.StatusCreated, out)
}

func (s *Server) adminDelete(c echo.Context) error {
	if !s.adminGuard(c) {
		return nil
	}
	if err := s.clients.Delete(c.Request().Context(), c.Param("id")); err != nil {
		if notFound(err) {
			return c.JSON(http.StatusNotFound, ErrInvalidRequest.WithDescription("unknown client"))
		}
		return c.JSON(http.StatusInternalServerError, ErrServerError)
	}
	return c.NoContent(http.StatusNoContent)
}
