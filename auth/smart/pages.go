package smart

import (
	"bytes"
	"html/template"
	"net/http"

	"github.com/labstack/echo/v4"
)

// The pages are plain HTML forms: they work without JavaScript and carry
// the CSRF token as a hidden field.
const pageHead = `<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{{.Title}} – Anodyne</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}label{display:block;margin:.6rem 0}
.err{color:#a00}button{margin:.6rem .4rem 0 0;padding:.4rem 1rem}</style></head><body>`

var (
	loginTmpl = template.Must(template.New("login").Parse(pageHead + `
<h1>Sign in</h1>{{if .Error}}<p class="err">{{.Error}}</p>{{end}}
<p><strong>{{.Client}}</strong> asks to access your health record.</p>
<form method="post" action="{{.Action}}">
<input type="hidden" name="req" value="{{.Req}}"><input type="hidden" name="csrf" value="{{.CSRF}}">
<label>User name <input name="username" autocomplete="username" required></label>
<label>Password <input type="password" name="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form>
{{if .Upstream}}<p><a href="{{.UpstreamURL}}">Sign in with {{.Upstream}}</a></p>{{end}}
</body></html>`))

	pickTmpl = template.Must(template.New("pick").Parse(pageHead + `
<h1>Choose a patient</h1>
<form method="post" action="{{.Action}}">
<input type="hidden" name="req" value="{{.Req}}"><input type="hidden" name="csrf" value="{{.CSRF}}">
{{range $i, $p := .Choices}}<label><input type="radio" name="patient" value="{{$p}}"{{if eq $i 0}} checked{{end}}> Patient/{{$p}}</label>{{end}}
<button type="submit">Continue</button></form></body></html>`))

	consentTmpl = template.Must(template.New("consent").Parse(pageHead + `
<h1>Allow access?</h1>
<p><strong>{{.Client}}</strong> asks for the following permissions{{if .Patient}} on Patient/{{.Patient}}{{end}}.
Untick what you do not want to share.</p>
<form method="post" action="{{.Action}}">
<input type="hidden" name="req" value="{{.Req}}"><input type="hidden" name="csrf" value="{{.CSRF}}">
{{range .Scopes}}<label><input type="checkbox" name="scope" value="{{.}}" checked> <code>{{.}}</code></label>{{end}}
<button type="submit" name="decision" value="allow">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button></form></body></html>`))

	errorTmpl = template.Must(template.New("error").Parse(pageHead + `
<h1>Cannot continue</h1><p class="err">{{.Message}}</p></body></html>`))
)

func render(c echo.Context, status int, t *template.Template, data map[string]any) error {
	if _, ok := data["Title"]; !ok {
		data["Title"] = t.Name()
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' *")
	return c.HTMLBlob(status, b.Bytes())
}

func (s *Server) errorPage(c echo.Context, status int, msg string) error {
	return render(c, status, errorTmpl, map[string]any{"Title": "Error", "Message": msg})
}

func (s *Server) renderLogin(c echo.Context, id string, req *authzRequest, errMsg string) error {
	client, err := s.clients.Get(c.Request().Context(), req.ClientID)
	if err != nil {
		return s.pageError(c, err)
	}
	data := map[string]any{"Title": "Sign in", "Req": id, "CSRF": req.CSRF, "Client": clientLabel(client), "Error": errMsg, "Action": pathLogin}
	if s.upstream != nil {
		data["Upstream"] = s.upstream.cfg.Name
		data["UpstreamURL"] = pathUpstream + "?req=" + id
	}
	status := http.StatusOK
	if errMsg != "" {
		status = http.StatusUnauthorized
	}
	return render(c, status, loginTmpl, data)
}
