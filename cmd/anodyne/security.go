package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/apps/clinician"
	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/auth/audit"
	"github.com/anodyne-fhir/anodyne/auth/smart"
	"github.com/anodyne-fhir/anodyne/deid"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/metrics"
	"github.com/anodyne-fhir/anodyne/research"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
)

// securityConfig is the authorization part of "anodyne serve".
type securityConfig struct {
	Trusted    trustedIssuers
	AdminToken string
	Audit      string
	OIDC       smart.UpstreamOIDC
	OIDCScopes string
	// PasswordChecks bounds password and client-secret checks per source
	// address and minute, across every process on the store.
	PasswordChecks int
}

// minAdminToken keeps the admin token out of guessing range.
const minAdminToken = 24

func (sc *securityConfig) register(fs *flag.FlagSet) {
	fs.Var(&sc.Trusted, "trusted-issuer", "also accept access tokens of an external authorization server (repeatable; several may be separated by ';'):\n"+
		"issuer=URL,jwks=URL[,aud=URL][,scope-claim=NAME][,patient-claim=NAME][,fhir-user-claim=NAME][,client-id-claim=NAME][,research-project-claim=NAME][,research-access-claim=NAME]\n"+
		"(aud defaults to the FHIR base; scope-claim to scope, then scp)")
	fs.StringVar(&sc.AdminToken, "admin-token", "", fmt.Sprintf("bearer token of the client admin API /auth/admin/clients (at least %d characters; prefer ANODYNE_ADMIN_TOKEN). Empty: the admin API is off and clients are managed with \"anodyne clients\"", minAdminToken))
	fs.StringVar(&sc.Audit, "audit", "on", "record an AuditEvent for every FHIR request: on or off")
	fs.StringVar(&sc.OIDC.Issuer, "oidc-issuer", "", "enterprise OpenID Connect provider users may sign in with (Okta, Entra ID, Keycloak); register <base-url>/auth/upstream/callback there")
	fs.StringVar(&sc.OIDC.ClientID, "oidc-client-id", "", "client id of Anodyne at the --oidc-issuer")
	fs.StringVar(&sc.OIDC.ClientSecret, "oidc-client-secret", "", "client secret at the --oidc-issuer (prefer ANODYNE_OIDC_CLIENT_SECRET)")
	fs.StringVar(&sc.OIDC.Name, "oidc-name", "", "label of the enterprise sign-in button (default: the issuer)")
	fs.StringVar(&sc.OIDC.FHIRUserClaim, "oidc-fhir-user-claim", "", "id_token claim holding the user's FHIR user (e.g. fhirUser with Practitioner/123); without it users must be linked explicitly")
	fs.StringVar(&sc.OIDCScopes, "oidc-scopes", "openid profile", "scopes requested from the --oidc-issuer (space-separated)")
	fs.IntVar(&sc.PasswordChecks, "password-checks-per-minute", 30, "password and client-secret checks allowed per source address and minute (a budget in the store, shared by every process on it)")
}

func (sc *securityConfig) validate(authOn bool) error {
	switch sc.Audit {
	case "on", "off":
	default:
		return fmt.Errorf("--audit must be on or off, not %q", sc.Audit)
	}
	if sc.PasswordChecks < 1 {
		return fmt.Errorf("--password-checks-per-minute must be at least 1, not %d", sc.PasswordChecks)
	}
	if sc.AdminToken != "" && len(sc.AdminToken) < minAdminToken {
		return fmt.Errorf("--admin-token must be at least %d characters", minAdminToken)
	}
	oidcSet := sc.OIDC.Issuer != "" || sc.OIDC.ClientID != "" || sc.OIDC.ClientSecret != ""
	if oidcSet && (sc.OIDC.Issuer == "" || sc.OIDC.ClientID == "") {
		return errors.New("--oidc-issuer and --oidc-client-id go together")
	}
	if !authOn && (oidcSet || len(sc.Trusted) > 0 || sc.AdminToken != "") {
		return errors.New("--trusted-issuer, --oidc-* and --admin-token need --auth=on")
	}
	return nil
}

// trustedIssuers is the repeatable --trusted-issuer flag.
type trustedIssuers []auth.TrustedIssuer

func (t *trustedIssuers) String() string {
	if t == nil {
		return ""
	}
	names := make([]string, len(*t))
	for i, x := range *t {
		names[i] = x.Issuer
	}
	return strings.Join(names, ";")
}

func (t *trustedIssuers) Set(v string) error {
	for _, one := range strings.Split(v, ";") {
		if strings.TrimSpace(one) == "" {
			continue
		}
		ti, err := parseTrustedIssuer(one)
		if err != nil {
			return err
		}
		*t = append(*t, ti)
	}
	return nil
}

// parseTrustedIssuer reads "issuer=URL,jwks=URL,aud=URL,scope-claim=scp,...".
// The audience may be left for the server to fill in (its FHIR base).
func parseTrustedIssuer(v string) (auth.TrustedIssuer, error) {
	var ti auth.TrustedIssuer
	for _, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || val == "" {
			return ti, fmt.Errorf("trusted issuer %q: %q is not key=value", v, kv)
		}
		switch k {
		case "issuer":
			ti.Issuer = val
		case "jwks":
			ti.JWKSURL = val
		case "aud":
			ti.Audience = val
		case "scope-claim":
			ti.Claims.Scope = append(ti.Claims.Scope, val)
		case "patient-claim":
			ti.Claims.Patient = val
		case "fhir-user-claim":
			ti.Claims.FHIRUser = val
		case "client-id-claim":
			ti.Claims.ClientID = val
		case "research-project-claim":
			ti.Claims.ResearchProject = val
		case "research-access-claim":
			ti.Claims.ResearchAccess = val
		default:
			return ti, fmt.Errorf("trusted issuer %q: unknown key %q (issuer, jwks, aud, scope-claim, patient-claim, fhir-user-claim, client-id-claim, research-project-claim, research-access-claim)", v, k)
		}
	}
	for name, u := range map[string]string{"issuer": ti.Issuer, "jwks": ti.JWKSURL} {
		p, err := url.Parse(u)
		if u == "" || err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			return ti, fmt.Errorf("trusted issuer %q: %s must be an absolute http(s) URL", v, name)
		}
	}
	return ti, nil
}

// security is what serve mounts around the FHIR API.
type security struct {
	// mount adds the authorization server's routes and CORS to the router.
	mount func(e *echo.Echo)
	// close stops the audit writer; call it after the HTTP server drained.
	close func() error
	// limit bounds concurrent requests per client.
	limit *clientLimiter
	// selfAuth verifies an access token as the FHIR API does and puts its
	// caller on ctx (the CDS Hooks service reading this server); nil with
	// authorization off.
	selfAuth func(ctx context.Context, token string) (context.Context, error)
	// audit records AuditEvents (nil with audit off).
	audit auth.AuditSink
}

// setupSecurity fills the authorization parts of fcfg (decision point,
// authentication and audit middleware, CapabilityStatement security) and
// returns what must be mounted on the router once it exists.
func setupSecurity(ctx context.Context, cfg serveConfig, base string, backend storage.Backend, reg *resources.Registry, fcfg *fhir.Config, m *metrics.Metrics, log *slog.Logger) (*security, error) {
	fhirBase := strings.TrimRight(base, "/") + "/fhir"
	sec := &security{mount: func(*echo.Echo) {}, close: func() error { return nil },
		limit: newClientLimiter(cfg.Transport.ClientRequests, log)}

	var auditMW echo.MiddlewareFunc
	var sink auth.AuditSink
	_, kvCommits := storage.As[storage.KVCommitter](backend)
	switch {
	case cfg.Sec.Audit == "on" && cfg.MongoURI == "" && kvCommits:
		// The embedded store: reads' events go to the journal beside the
		// database (fsynced before the response) and are stored as
		// AuditEvents in batches (auth/audit.Journal).
		j, err := audit.OpenJournal(ctx, filepath.Join(cfg.DataDir, "audit-journal"), backend, reg, log, audit.WithFsyncObserver(m.AuditBatch))
		if err != nil {
			return nil, err
		}
		auditGauge(m, j)
		sec.close = j.Close
		sink = j
		sec.audit = j
		record, wait := auth.AuditMiddleware(j, fhirBase, "/fhir", log), auditConsistent(j)
		auditMW = func(next echo.HandlerFunc) echo.HandlerFunc { return record(wait(next)) }
	case cfg.Sec.Audit == "on":
		g := audit.NewGroupCommit(backend, reg, log, auditOptions(m)...)
		auditGauge(m, g)
		sec.close = g.Close
		sink = g
		sec.audit = g
		auditMW = auth.AuditMiddleware(g, fhirBase, "/fhir", log)
	default:
		log.Warn("AUDIT IS OFF: requests to patient data leave no AuditEvent")
	}

	if cfg.Auth == "off" {
		log.Warn("AUTHORIZATION IS OFF: every client can read and write every resource. Use only for development, never with real patient data.")
		fcfg.Authorizer = auth.AllowAll{}
		fcfg.Middleware = auditMW
		sec.mount = func(e *echo.Echo) {
			e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
				return func(c echo.Context) error {
					// Tell every client, not only the operator reading the logs.
					c.Response().Header().Set("X-Anodyne-Authorization", "off; development only")
					return next(c)
				}
			})
		}
		return sec, nil
	}

	scfg := smart.Config{
		BaseURL:    base,
		FHIRBase:   fhirBase,
		KV:         backend.KV(),
		AdminToken: cfg.Sec.AdminToken,
		Logger:     log,
		OnToken:    m.Token,
		Audit:      sink, // account lock-outs

		PasswordChecksPerMinute: cfg.Sec.PasswordChecks,
	}
	if cfg.Sec.OIDC.Issuer != "" {
		up := cfg.Sec.OIDC
		up.Scopes = strings.Fields(cfg.Sec.OIDCScopes)
		scfg.Upstream = &up
	}
	as, err := smart.New(ctx, scfg)
	if err != nil {
		return nil, fmt.Errorf("starting the SMART authorization server: %w", err)
	}
	// The built-in clinician app is a public client of every server with
	// authorization on.
	if err := clinician.Register(ctx, smart.NewClientStore(backend.KV()), base); err != nil {
		return nil, err
	}
	trusted := []auth.TrustedIssuer{as.TrustedIssuer()}
	for _, t := range cfg.Sec.Trusted {
		if t.Audience == "" {
			t.Audience = fhirBase
		}
		trusted = append(trusted, t)
	}
	ver, err := auth.NewVerifier(ctx, log, trusted...)
	if err != nil {
		return nil, fmt.Errorf("trusted issuers: %w", err)
	}
	authn := ver.Middleware(base, nil)
	sec.selfAuth = func(ctx context.Context, token string) (context.Context, error) {
		p, err := ver.Verify(ctx, token)
		if err != nil {
			return nil, err
		}
		return auth.WithPrincipal(ctx, p), nil
	}
	fcfg.Authorizer = auth.NewPolicy(reg)
	fcfg.Security = as.SecurityComponent()
	// Verify first, so that the bound and the audit record know who called.
	fcfg.Middleware = func(next echo.HandlerFunc) echo.HandlerFunc { return authn(sec.limit.principalLimit(next)) }
	if auditMW != nil {
		fcfg.Middleware = func(next echo.HandlerFunc) echo.HandlerFunc {
			return authn(sec.limit.principalLimit(auditMW(next)))
		}
	}
	sec.mount = func(e *echo.Echo) {
		e.Pre(as.CORS())
		as.Register(e)
	}
	issuers := make([]string, len(trusted))
	for i, t := range trusted {
		issuers[i] = t.Issuer
	}
	log.Info("authorization on", "smart_configuration", fhirBase+"/.well-known/smart-configuration",
		"trusted_issuers", issuers, "admin_api", cfg.Sec.AdminToken != "", "enterprise_sign_in", cfg.Sec.OIDC.Issuer)
	return sec, nil
}

// cursorKeyName is where the paging-cursor signing key lives in the KV.
const cursorKeyName = "fhir/cursor-key"

// loadCursorKey returns the key that signs paging cursors, creating it on
// first start. Keeping it in the store lets next links survive a restart
// and work on every replica sharing the database.
func loadCursorKey(ctx context.Context, kv storage.KV) ([]byte, error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("drawing cursor key: %w", err)
	}
	// Two replicas starting together both try; PutIfAbsent lets one win and
	// both then read the winner's key.
	if _, err := kv.PutIfAbsent(ctx, cursorKeyName, fresh, 0); err != nil {
		return nil, fmt.Errorf("storing cursor key: %w", err)
	}
	key, err := kv.Get(ctx, cursorKeyName)
	if err != nil {
		return nil, fmt.Errorf("reading cursor key: %w", err)
	}
	if len(key) < 16 {
		return nil, fmt.Errorf("cursor key in the store is %d bytes: too short", len(key))
	}
	return key, nil
}

// prepareServer loads what the FHIR server and the authorization layer
// share (the search-parameter registry, the cursor key) and wires
// authorization and audit into fcfg.
func prepareServer(ctx context.Context, cfg serveConfig, base string, backend storage.Backend, fcfg *fhir.Config, m *metrics.Metrics, log *slog.Logger) (*security, error) {
	fhirBase := strings.TrimRight(base, "/") + "/fhir"
	reg, err := resources.Load(resources.WithBaseURL(fhirBase), resources.WithLogger(log))
	if err != nil {
		return nil, fmt.Errorf("loading search parameter registry: %w", err)
	}
	fcfg.Registry = reg
	if fcfg.CursorKey, err = loadCursorKey(ctx, backend.KV()); err != nil {
		return nil, err
	}
	// Research access: every output passes the de-identifier for callers
	// whose token names a research project. A bad rules file stops the
	// start-up with its line and reason.
	rules := deid.DefaultRules()
	if cfg.DeidRules != "" {
		if rules, err = os.ReadFile(cfg.DeidRules); err != nil {
			return nil, fmt.Errorf("reading --deid-rules: %w", err)
		}
	}
	d, err := deid.New(rules)
	if err != nil {
		return nil, fmt.Errorf("--deid-rules %s: %w", cmp.Or(cfg.DeidRules, "(embedded)"), err)
	}
	fcfg.Output = research.New(d, backend, reg, log)
	return setupSecurity(ctx, cfg, base, backend, reg, fcfg, m, log)
}

// auditConsistent makes a request that may return AuditEvents wait until
// every event acknowledged before it is stored as a resource (the journal
// stores them a few milliseconds after their fsync), so that an auditor
// never misses a read whose client already has its answer.
func auditConsistent(j *audit.Journal) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if mayReturnAuditEvents(c.Request().URL.Path) {
				ctx, cancel := context.WithTimeout(c.Request().Context(), 10*time.Second)
				err := j.WaitStored(ctx)
				cancel()
				if err != nil {
					c.Response().Header().Set("Retry-After", "1")
					return echo.NewHTTPError(http.StatusServiceUnavailable, "the audit trail is not stored yet; retry")
				}
			}
			return next(c)
		}
	}
}

// mayReturnAuditEvents: AuditEvent itself, system-level interactions
// (search, history, $export), type-level operations and Patient
// compartment requests ($everything, Patient/x/AuditEvent).
func mayReturnAuditEvents(path string) bool {
	rest, ok := strings.CutPrefix(path, "/fhir")
	if !ok {
		return false
	}
	rest = strings.Trim(rest, "/")
	seg := strings.SplitN(rest, "/", 3)
	switch {
	case rest == "" || strings.HasPrefix(rest, "_") || strings.HasPrefix(rest, "$"):
		return true
	case seg[0] == "AuditEvent":
		return true
	case len(seg) >= 2 && strings.HasPrefix(seg[1], "$"):
		return true
	}
	return len(seg) == 3 && !strings.HasPrefix(seg[2], "_history")
}
