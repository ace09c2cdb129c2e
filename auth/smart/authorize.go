package smart

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/labstack/echo/v4"
)

// authzRequest is an authorize request in progress, between the first
// redirect and the code: validated parameters, then the user, the patient
// and the consent as the pages collect them.
type authzRequest struct {
	ClientID    string        `json:"client_id"`
	RedirectURI string        `json:"redirect_uri"`
	State       string        `json:"state"`
	Scope       string        `json:"scope"` // requested ∩ allowed for the client
	Challenge   string        `json:"code_challenge"`
	Nonce       string        `json:"nonce,omitempty"`
	EHR         bool          `json:"ehr,omitempty"`
	Context     LaunchContext `json:"context"`
	NeedPatient bool          `json:"need_patient,omitempty"`
	CSRF        string        `json:"csrf"`
	Subject     string        `json:"sub,omitempty"`
	FHIRUser    string        `json:"fhirUser,omitempty"`
	Choices     []string      `json:"choices,omitempty"`
	LaunchUser  string        `json:"launch_user,omitempty"`
	Profile     profileClaims `json:"profile,omitempty"`
}

// authorize validates the request (RFC 6749 4.1.1 plus SMART: aud, PKCE
// S256) and starts the login. Until client_id and redirect_uri are known
// good, errors are shown to the user and never redirected.
func (s *Server) authorize(c echo.Context) error {
	ctx := c.Request().Context()
	get := func(k string) string { return c.FormValue(k) }
	client, err := s.clients.Get(ctx, get("client_id"))
	if err != nil {
		if notFound(err) {
			return s.errorPage(c, http.StatusBadRequest, "Unknown application (client_id).")
		}
		return s.errorPage(c, http.StatusInternalServerError, "The authorization server could not load the application.")
	}
	redirect := get("redirect_uri")
	if redirect == "" || !slices.Contains(client.RedirectURIs, redirect) {
		return s.errorPage(c, http.StatusBadRequest, "The redirect_uri is not registered for this application.")
	}
	state := get("state")
	fail := func(e *OAuthError, desc string) error {
		return redirectError(c, redirect, state, e.WithDescription(desc))
	}
	if get("response_type") != "code" {
		return fail(ErrUnsupportedRespType, "response_type must be code")
	}
	// SMART App Launch 2.2 makes state required: it is the app's defence
	// against CSRF on its redirect URI, so a request without one is refused.
	if state == "" {
		return fail(ErrInvalidRequest, "state is required")
	}
	if m := get("code_challenge_method"); m != "S256" {
		return fail(ErrInvalidRequest, "PKCE with code_challenge_method=S256 is required")
	}
	if ch := get("code_challenge"); len(ch) != 43 || strings.Trim(ch, base64URLAlphabet) != "" {
		return fail(ErrInvalidRequest, "code_challenge must be a base64url SHA-256 digest")
	}
	aud := get("aud")
	if aud == "" {
		aud = get("resource")
	}
	if strings.TrimRight(aud, "/") != s.cfg.FHIRBase {
		return fail(ErrInvalidRequest, "aud must be this server's FHIR base URL")
	}
	scope := grantable(client, get("scope"))
	if scope == "" {
		return fail(ErrInvalidScope, "none of the requested scopes may be granted to this application")
	}
	sc := auth.ParseScopes(scope)
	req := &authzRequest{
		ClientID: client.ID, RedirectURI: redirect, State: state, Scope: scope,
		Challenge: get("code_challenge"), Nonce: get("nonce"), CSRF: randomToken(24),
	}
	if launch := get("launch"); launch != "" {
		// Another app presenting the launch value learns nothing and cannot
		// burn it: the binding is checked before the record is taken.
		var rec launchRecord
		if err := s.kv.getJSON(ctx, hashKey(pfxLaunch, launch), &rec); err != nil {
			if notFound(err) {
				return fail(ErrInvalidRequest, "unknown or expired launch")
			}
			return fail(ErrServerError, "could not load the launch context")
		}
		if rec.ClientID != client.ID {
			s.log.WarnContext(ctx, "launch presented by another client", "client", client.ID)
			return fail(ErrInvalidRequest, "unknown or expired launch")
		}
		if !sc.Has("launch") {
			return fail(ErrInvalidScope, "an EHR launch needs the launch scope")
		}
		if err := s.kv.takeJSON(ctx, hashKey(pfxLaunch, launch), &rec); err != nil {
			if notFound(err) { // redeemed by a concurrent request
				return fail(ErrInvalidRequest, "unknown or expired launch")
			}
			return fail(ErrServerError, "could not load the launch context")
		}
		req.EHR, req.Context, req.LaunchUser = true, rec.Context, rec.User
	}
	if req.Context.Patient == "" && (sc.Has("launch/patient") || hasContext(sc, auth.ContextPatient)) {
		req.NeedPatient = true
	}
	id := randomToken(24)
	if err := s.kv.putJSON(ctx, hashKey(pfxRequest, id), req, requestTTL); err != nil {
		s.log.ErrorContext(ctx, "store authorize request", "err", err)
		return fail(ErrServerError, "could not store the request")
	}
	s.setCSRFCookie(c, id, req.CSRF)
	return c.Redirect(http.StatusFound, pathLogin+"?req="+url.QueryEscape(id))
}

const base64URLAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func hasContext(sc auth.Scopes, ctx auth.Context) bool {
	for _, r := range sc.Resource {
		if r.Context == ctx {
			return true
		}
	}
	return false
}

// grantable keeps the requested scopes that the client is registered for:
// malformed resource scopes are dropped, never reinterpreted.
func grantable(c *Client, requested string) string {
	allowed := auth.ParseScopes(c.Scopes)
	req := auth.ParseScopes(requested)
	var out []string
	for _, o := range req.Other {
		if slices.Contains(allowed.Other, o) && !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	for _, r := range req.Resource {
		for _, a := range allowed.Resource {
			if a.Covers(r) {
				if !slices.Contains(out, r.Raw) {
					out = append(out, r.Raw)
				}
				break
			}
		}
	}
	return strings.Join(out, " ")
}

func redirectError(c echo.Context, redirect, state string, e *OAuthError) error {
	q := url.Values{"error": {e.Code}}
	if e.Description != "" {
		q.Set("error_description", e.Description)
	}
	if state != "" {
		q.Set("state", state)
	}
	return c.Redirect(http.StatusFound, appendQuery(redirect, q))
}

func appendQuery(u string, q url.Values) string {
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + q.Encode()
}

func csrfCookieName(id string) string { return "anodyne_csrf_" + hashKey("", id)[:12] }

func (s *Server) setCSRFCookie(c echo.Context, id, value string) {
	c.SetCookie(&http.Cookie{
		Name: csrfCookieName(id), Value: value, Path: "/auth/", HttpOnly: true,
		SameSite: http.SameSiteLaxMode, Secure: strings.HasPrefix(s.cfg.BaseURL, "https://"),
		MaxAge: int(requestTTL.Seconds()),
	})
}

var errBadCSRF = errors.New("the form has expired or was not sent by this browser")

// loadRequest finds the pending request of a page. For form posts it also
// checks the CSRF token: the hidden field must equal both the server-side
// value and the cookie set on this browser at /authorize.
func (s *Server) loadRequest(c echo.Context, post bool) (string, *authzRequest, error) {
	id := c.FormValue("req")
	if id == "" {
		return "", nil, errBadCSRF
	}
	var req authzRequest
	if err := s.kv.getJSON(c.Request().Context(), hashKey(pfxRequest, id), &req); err != nil {
		if notFound(err) {
			return "", nil, errBadCSRF
		}
		return "", nil, err
	}
	if post {
		ck, err := c.Cookie(csrfCookieName(id))
		form := c.FormValue("csrf")
		if err != nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(req.CSRF)) != 1 ||
			subtle.ConstantTimeCompare([]byte(form), []byte(req.CSRF)) != 1 {
			return "", nil, errBadCSRF
		}
	}
	return id, &req, nil
}

func (s *Server) saveRequest(ctx context.Context, id string, req *authzRequest) error {
	return s.kv.putJSON(ctx, hashKey(pfxRequest, id), req, requestTTL)
}

func (s *Server) pageError(c echo.Context, err error) error {
	if errors.Is(err, errBadCSRF) {
		return s.errorPage(c, http.StatusBadRequest, "This sign-in form has expired. Please start again from the application.")
	}
	s.log.ErrorContext(c.Request().Context(), "authorize page", "err", err)
	return s.errorPage(c, http.StatusInternalServerError, "The authorization server failed. Please try again.")
}

func (s *Server) loginPage(c echo.Context) error {
	id, req, err := s.loadRequest(c, false)
	if err != nil {
		return s.pageError(c, err)
	}
	return s.renderLogin(c, id, req, "")
}

func (s *Server) loginSubmit(c echo.Context) error {
	ctx := c.Request().Context()
	id, req, err := s.loadRequest(c, true)
	if err != nil {
		return s.pageError(c, err)
	}
	username := c.FormValue("username")
	// A locked user name is refused before any hash is spent on it.
	until, err := s.lockedUntil(ctx, username)
	if err != nil {
		return s.pageError(c, err)
	}
	if !until.IsZero() {
		return s.renderLogin(c, id, req, "Too many failed sign-ins: this account is locked until "+until.UTC().Format("15:04:05")+" UTC.")
	}
	var acct Account
	err = s.kv.getJSON(ctx, pfxAccount+strings.ToLower(username), &acct)
	if err != nil && !notFound(err) {
		return s.pageError(c, err)
	}
	hash := dummyHash // same cost for unknown users, so timing does not reveal accounts
	if err == nil && acct.PasswordHash != "" {
		hash = acct.PasswordHash
	}
	ok, err := s.checkPassword(ctx, sourceOf(c.Request().RemoteAddr), hash, c.FormValue("password"))
	switch {
	case errors.Is(err, errTooManyAttempts):
		c.Response().Header().Set("Retry-After", strconv.Itoa(sourceRetrySeconds))
		return s.renderLogin(c, id, req, "Too many sign-in attempts from your address. Please wait a minute and try again.")
	case errors.Is(err, errHashBusy):
		c.Response().Header().Set("Retry-After", strconv.Itoa(busyRetrySeconds))
		return s.renderLogin(c, id, req, "The server is busy checking other sign-ins. Please try again in a moment.")
	case err != nil:
		return s.pageError(c, fmt.Errorf("account %s: %w", acct.Username, err))
	}
	ok = ok && hash != dummyHash
	if !ok {
		if err := s.signInFailed(ctx, username, c.RealIP(), req.ClientID); err != nil {
			return s.pageError(c, err)
		}
		return s.renderLogin(c, id, req, "Unknown user name or wrong password.")
	}
	if err := s.signInSucceeded(ctx, username); err != nil {
		return s.pageError(c, err)
	}
	return s.signedIn(c, id, req, acct.Username, &acct)
}

// dummyHash is a valid argon2id hash of a random string, used to spend
// the same time on unknown users.
const dummyHash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2CPHfuzjUFz7eyBkjSK0KX5v5gRtafkG3CSr0ZN0rEc"

// signedIn continues after login (local or federated): patient picker if
// needed, then consent.
func (s *Server) signedIn(c echo.Context, id string, req *authzRequest, subject string, acct *Account) error {
	ctx := c.Request().Context()
	req.Subject, req.FHIRUser = subject, acct.FHIRUser
	req.Profile = profileClaims{Name: acct.Name, PreferredUsername: acct.Username}
	if req.EHR {
		deny := ""
		switch {
		case !launchUserMatches(req.LaunchUser, subject, acct):
			deny = "the launch was created for another user"
		case req.Context.Patient != "" && !slices.Contains(acct.patientChoices(), req.Context.Patient):
			// The EHR asserts the patient; we still hold the user to what
			// their account may see, so a launch cannot widen it.
			deny = "the signed-in user may not see the launch's patient"
		}
		if deny != "" {
			_ = s.kv.Delete(ctx, hashKey(pfxRequest, id))
			s.log.WarnContext(ctx, "EHR launch refused", "client", req.ClientID, "user", subject, "reason", deny)
			return redirectError(c, req.RedirectURI, req.State, ErrAccessDenied.WithDescription(deny))
		}
	}
	if req.NeedPatient {
		req.Choices = acct.patientChoices()
		switch len(req.Choices) {
		case 0:
			_ = s.kv.Delete(ctx, hashKey(pfxRequest, id))
			return redirectError(c, req.RedirectURI, req.State, ErrAccessDenied.WithDescription("the user may not see any patient"))
		case 1:
			req.Context.Patient = req.Choices[0]
		}
	}
	if err := s.saveRequest(ctx, id, req); err != nil {
		return s.pageError(c, err)
	}
	if req.NeedPatient && req.Context.Patient == "" {
		return c.Redirect(http.StatusSeeOther, pathPick+"?req="+url.QueryEscape(id))
	}
	return c.Redirect(http.StatusSeeOther, pathConsent+"?req="+url.QueryEscape(id))
}

func (s *Server) pickPage(c echo.Context) error {
	id, req, err := s.loadRequest(c, false)
	if err != nil || req.Subject == "" {
		return s.pageError(c, errBadCSRF)
	}
	return render(c, http.StatusOK, pickTmpl, map[string]any{"Req": id, "CSRF": req.CSRF, "Choices": req.Choices, "Action": pathPick})
}

func (s *Server) pickSubmit(c echo.Context) error {
	id, req, err := s.loadRequest(c, true)
	if err != nil || req.Subject == "" {
		return s.pageError(c, errBadCSRF)
	}
	p := c.FormValue("patient")
	if !slices.Contains(req.Choices, p) {
		return s.errorPage(c, http.StatusBadRequest, "Please choose one of the listed patients.")
	}
	req.Context.Patient = p
	if err := s.saveRequest(c.Request().Context(), id, req); err != nil {
		return s.pageError(c, err)
	}
	return c.Redirect(http.StatusSeeOther, pathConsent+"?req="+url.QueryEscape(id))
}

func (s *Server) consentPage(c echo.Context) error {
	id, req, err := s.loadRequest(c, false)
	if err != nil || req.Subject == "" || (req.NeedPatient && req.Context.Patient == "") {
		return s.pageError(c, errBadCSRF)
	}
	client, err := s.clients.Get(c.Request().Context(), req.ClientID)
	if err != nil {
		return s.pageError(c, err)
	}
	return render(c, http.StatusOK, consentTmpl, map[string]any{
		"Req": id, "CSRF": req.CSRF, "Client": clientLabel(client), "Scopes": strings.Fields(req.Scope),
		"Patient": req.Context.Patient, "User": req.FHIRUser, "Action": pathConsent,
	})
}

func clientLabel(c *Client) string {
	if c.Name != "" {
		return c.Name
	}
	return c.ID
}

// consentSubmit issues the code for the scopes the user kept ticked.
func (s *Server) consentSubmit(c echo.Context) error {
	ctx := c.Request().Context()
	id, req, err := s.loadRequest(c, true)
	if err != nil || req.Subject == "" || (req.NeedPatient && req.Context.Patient == "") {
		return s.pageError(c, errBadCSRF)
	}
	// The request is single-use from here on, whatever the answer.
	if _, err := s.kv.Take(ctx, hashKey(pfxRequest, id)); err != nil {
		return s.pageError(c, errBadCSRF)
	}
	if c.FormValue("decision") != "allow" {
		return redirectError(c, req.RedirectURI, req.State, ErrAccessDenied.WithDescription("the user declined"))
	}
	form, err := c.FormParams()
	if err != nil {
		return s.pageError(c, err)
	}
	ticked := form["scope"]
	var kept []string
	for _, sc := range strings.Fields(req.Scope) {
		if slices.Contains(ticked, sc) {
			kept = append(kept, sc)
		}
	}
	granted := auth.ParseScopes(strings.Join(kept, " "))
	if req.Context.Patient == "" && hasContext(granted, auth.ContextPatient) {
		// A patient/ scope is meaningless without a patient in context.
		return redirectError(c, req.RedirectURI, req.State, ErrInvalidScope.WithDescription("patient scopes need a patient in context"))
	}
	if len(kept) == 0 {
		return redirectError(c, req.RedirectURI, req.State, ErrAccessDenied.WithDescription("no scope was granted"))
	}
	g := grant{
		ClientID: req.ClientID, Subject: req.Subject, FHIRUser: req.FHIRUser, Scope: strings.Join(kept, " "),
		Context: req.Context, EHR: req.EHR, Nonce: req.Nonce, RedirectURI: req.RedirectURI, Challenge: req.Challenge,
	}
	if granted.Has("profile") && req.Profile != (profileClaims{}) {
		pc := req.Profile
		g.Profile = &pc
	}
	code := randomToken(32)
	if err := s.kv.putJSON(ctx, hashKey(pfxCode, code), g, codeTTL); err != nil {
		return s.pageError(c, err)
	}
	q := url.Values{"code": {code}}
	if req.State != "" {
		q.Set("state", req.State)
	}
	return c.Redirect(http.StatusFound, appendQuery(req.RedirectURI, q))
}
