// Package clinician serves the clinician SMART app at /apps/clinician/:
// static files (plain HTML, CSS and ES modules, with the fhirclient and
// uPlot libraries vendored under web/vendor) embedded in the binary, and
// its registration as a public client of the built-in authorization
// server.
//
// It owns the app and its client record. It must not know the FHIR
// server's internals: the app reads the FHIR API with the token it is
// granted, like any other SMART app, so it works against any SMART server
// holding the data.
package clinician

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth/smart"
)

//go:embed web
var files embed.FS

// ClientID is the app's client_id at the built-in authorization server.
const ClientID = "anodyne-clinician"

// Path is where the app is served.
const Path = "/apps/clinician/"

// Scopes are what the app may be granted: user-level reads for the
// worklist, patient-level reads for a launch with a patient in context.
const Scopes = "openid fhirUser profile launch launch/patient online_access user/*.rs patient/*.rs"

// Client is the app's registration for a server whose root is base.
func Client(base string) smart.Client {
	base = strings.TrimRight(base, "/")
	return smart.Client{
		ID:           ClientID,
		Name:         "Anodyne clinician view",
		Type:         smart.ClientPublic,
		RedirectURIs: []string{base + Path},
		Origins:      []string{origin(base)},
		Scopes:       Scopes,
	}
}

// origin is scheme://host[:port] of base.
func origin(base string) string {
	if i := strings.Index(base, "://"); i >= 0 {
		if j := strings.IndexByte(base[i+3:], '/'); j >= 0 {
			return base[:i+3+j]
		}
	}
	return base
}

// Register puts the app's client record in cs, replacing an earlier one
// so that a changed --base-url is followed at the next start.
func Register(ctx context.Context, cs *smart.ClientStore, base string) error {
	c := Client(base)
	if _, err := smart.RegisterClient(ctx, cs, &c, ""); err != nil {
		return fmt.Errorf("registering the clinician app: %w", err)
	}
	return nil
}

// Mount serves the app's files under Path.
func Mount(e *echo.Echo) error {
	sub, err := fs.Sub(files, "web")
	if err != nil {
		return fmt.Errorf("clinician app files: %w", err)
	}
	fileServer := http.StripPrefix(strings.TrimSuffix(Path, "/"), http.FileServer(http.FS(sub)))
	h := func(c echo.Context) error {
		w := c.Response().Header()
		// Scripts and styles only from the app itself; data from any
		// https FHIR server (or this one).
		w.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' https:; frame-ancestors 'self'; base-uri 'self'; form-action 'self'")
		w.Set("X-Content-Type-Options", "nosniff")
		w.Set("Referrer-Policy", "no-referrer")
		w.Set("Cache-Control", "no-cache")
		if strings.HasSuffix(c.Request().URL.Path, ".mjs") {
			w.Set("Content-Type", "text/javascript; charset=utf-8")
		}
		fileServer.ServeHTTP(c.Response(), c.Request())
		return nil
	}
	e.GET(strings.TrimSuffix(Path, "/"), func(c echo.Context) error {
		return c.Redirect(http.StatusMovedPermanently, Path)
	})
	e.GET(Path+"*", h)
	return nil
}
