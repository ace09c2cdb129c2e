package smart

import (
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"
)

// openCORS opens a discovery document to any origin (no credentials).
func openCORS(w *echo.Response) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
}

// allowedOrigin reports whether origin is registered by some client.
func (s *Server) allowedOrigin(r *http.Request, origin string) bool {
	if origin == "" {
		return false
	}
	clients, err := s.clients.List(r.Context())
	if err != nil {
		s.log.ErrorContext(r.Context(), "CORS: list clients", "err", err)
		return false
	}
	for _, c := range clients {
		if slices.Contains(c.Origins, origin) {
			return true
		}
	}
	return false
}

func (s *Server) preflight(c echo.Context) error {
	r := c.Request()
	origin := r.Header.Get("Origin")
	h := c.Response().Header()
	p := r.URL.Path
	if p == "/.well-known/openid-configuration" || p == pathJWKS || p == s.fhirPath+"/.well-known/smart-configuration" {
		h.Set("Access-Control-Allow-Origin", "*")
	} else if s.allowedOrigin(r, origin) {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
	} else {
		return c.NoContent(http.StatusForbidden)
	}
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Match, If-None-Exist")
	h.Set("Access-Control-Max-Age", "600")
	return c.NoContent(http.StatusNoContent)
}

// CORS is the middleware for the FHIR API and the token endpoint: a
// browser origin is allowed only if a registered client lists it. Mount it
// before the auth middleware so that preflights are answered.
func (s *Server) CORS() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			origin := r.Header.Get("Origin")
			if origin == "" {
				return next(c)
			}
			p := r.URL.Path
			if p == "/.well-known/openid-configuration" || p == pathJWKS || p == s.fhirPath+"/.well-known/smart-configuration" || p == s.fhirPath+"/metadata" {
				c.Response().Header().Set("Access-Control-Allow-Origin", "*")
				if r.Method == http.MethodOptions {
					return s.preflight(c)
				}
				return next(c)
			}
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				return s.preflight(c)
			}
			if s.allowedOrigin(r, origin) {
				h := c.Response().Header()
				h.Set("Access-Control-Allow-Origin", origin)
				h.Add("Vary", "Origin")
				h.Set("Access-Control-Expose-Headers", "Location, ETag, Content-Location, WWW-Authenticate")
			}
			return next(c)
		}
	}
}
