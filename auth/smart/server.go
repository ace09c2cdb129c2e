package smart

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/labstack/echo/v4"
)

// Lifetimes. SMART caps access tokens at one hour; backend-services
// tokens are kept at the recommended five minutes.
const (
	userTokenTTL    = time.Hour
	backendTokenTTL = 5 * time.Minute
	codeTTL         = time.Minute
	requestTTL      = 15 * time.Minute
	launchTTL       = 5 * time.Minute
	offlineTTL      = 30 * 24 * time.Hour
	onlineTTL       = 8 * time.Hour
	maxAssertionTTL = 5 * time.Minute
	clockSkew       = 30 * time.Second
)

// Config configures the built-in authorization server.
type Config struct {
	// BaseURL is the public base of the server (scheme://host[:port]); every
	// absolute URL is built from it, never from the Host header. It is also
	// the issuer.
	BaseURL string
	// FHIRBase is the FHIR base URL (BaseURL+"/fhir"): the audience of our
	// tokens and the required "aud" of authorize requests.
	FHIRBase string
	KV       storage.KV
	// Upstream, when set, lets users sign in with an enterprise OIDC provider.
	Upstream *UpstreamOIDC
	// AdminToken, when set, enables the client admin API (Bearer AdminToken).
	AdminToken string
	// HTTPClient fetches client JWKS URLs and talks to the upstream provider.
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Lockout is the password sign-in lock-out policy; zero fields take
	// the defaults (5 failures, 1 minute doubling up to 1 hour).
	Lockout Lockout
	// Audit, when set, records security events (account lock-outs) as
	// AuditEvents, in the same sink as the FHIR API's.
	Audit auth.AuditSink
	// PasswordChecksPerMinute bounds password and client-secret checks per
	// source address (TCP peer); 0 means 30.
	PasswordChecksPerMinute int
	// Now, when set, replaces time.Now as the server's clock (tests that
	// step through lock-outs and expiries without sleeping).
	Now func() time.Time
	// OnToken, when set, is told of every token endpoint answer: the grant
	// type and "issued" or the OAuth error code (for metrics).
	OnToken func(grant, outcome string)
}

// Server is the built-in SMART authorization server.
type Server struct {
	cfg      Config
	kv       kv
	clients  *ClientStore
	keys     *keyRing
	jwks     *jwksCache
	upstream *upstream
	verifier *auth.Verifier
	handlers map[string]tokenHandler
	log      *slog.Logger
	fhirPath string
	adminSum [32]byte
	now      func() time.Time
	hashes   *hashGate
	sources  *sourceLimits
	onToken  func(grant, outcome string)
}

// New builds the server, generating and storing a signing key on first start.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.KV == nil {
		return nil, errors.New("smart: Config.KV is required")
	}
	bu, err := url.Parse(cfg.BaseURL)
	if err != nil || bu.Scheme == "" || bu.Host == "" {
		return nil, fmt.Errorf("smart: BaseURL %q is not an absolute URL", cfg.BaseURL)
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	if cfg.FHIRBase == "" {
		cfg.FHIRBase = cfg.BaseURL + "/fhir"
	}
	cfg.FHIRBase = strings.TrimRight(cfg.FHIRBase, "/")
	fu, err := url.Parse(cfg.FHIRBase)
	if err != nil || fu.Scheme == "" || fu.Host == "" {
		return nil, fmt.Errorf("smart: FHIRBase %q is not an absolute URL", cfg.FHIRBase)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	s := &Server{
		cfg:      cfg,
		onToken:  cfg.OnToken,
		kv:       kv{cfg.KV},
		clients:  NewClientStore(cfg.KV),
		jwks:     &jwksCache{client: cfg.HTTPClient, sets: map[string]cachedSet{}},
		log:      cfg.Logger.With("component", "smart"),
		fhirPath: fu.Path,
		now:      cfg.Now,
		hashes:   newHashGate(runtime.GOMAXPROCS(0), 4*runtime.GOMAXPROCS(0)),
		sources:  newSourceLimits(kv{cfg.KV}, cfg.PasswordChecksPerMinute),
	}
	if cfg.AdminToken != "" {
		s.adminSum = sha256.Sum256([]byte(cfg.AdminToken))
	}
	if s.keys, err = newKeyRing(ctx, s.kv); err != nil {
		return nil, fmt.Errorf("smart: signing keys: %w", err)
	}
	if s.verifier, err = auth.NewVerifier(ctx, s.log, s.TrustedIssuer()); err != nil {
		return nil, fmt.Errorf("smart: %w", err)
	}
	s.handlers = map[string]tokenHandler{}
	for _, h := range []tokenHandler{&codeGrant{s}, &refreshGrant{s}, &clientCredentialsGrant{s}} {
		s.handlers[h.grantType()] = h
	}
	if cfg.Upstream != nil {
		if s.upstream, err = newUpstream(ctx, s, *cfg.Upstream); err != nil {
			return nil, fmt.Errorf("smart: upstream provider: %w", err)
		}
	}
	return s, nil
}

// Clients gives access to the client registry.
func (s *Server) Clients() *ClientStore { return s.clients }

// Issuer is the issuer of our tokens.
func (s *Server) Issuer() string { return s.cfg.BaseURL }

// RotateKey makes a fresh signing key active; the old one stays published
// for a while so that tokens it signed keep verifying. It returns the new kid.
func (s *Server) RotateKey(ctx context.Context) (string, error) {
	kid, err := s.keys.rotate(ctx)
	if err != nil {
		return "", fmt.Errorf("smart: rotate key: %w", err)
	}
	s.log.InfoContext(ctx, "signing key rotated", "kid", kid)
	return kid, nil
}

// TrustedIssuer describes this server to the resource server (package auth).
func (s *Server) TrustedIssuer() auth.TrustedIssuer {
	return auth.TrustedIssuer{
		Issuer:   s.cfg.BaseURL,
		KeySet:   s.keys,
		Audience: s.cfg.FHIRBase,
		Algs:     []string{"RS256"},
		Active:   s.tokenActive,
		Claims:   auth.ClaimMapping{ResearchProject: "research_project", ResearchAccess: "research_access"},
	}
}

// tokenActive rejects revoked tokens: an access token is live only while
// its record exists and its grant has not been revoked.
func (s *Server) tokenActive(ctx context.Context, raw string) error {
	var g grant
	if err := s.kv.getJSON(ctx, hashKey(pfxAccess, raw), &g); err != nil {
		if notFound(err) {
			return errors.New("token revoked or unknown")
		}
		return fmt.Errorf("check token: %w", err)
	}
	revoked, err := s.grantRevoked(ctx, g)
	if err != nil {
		return err
	}
	if revoked {
		return errors.New("the token's grant was revoked")
	}
	return nil
}

// Routes of the server, relative to BaseURL.
const (
	pathAuthorize  = "/auth/authorize"
	pathToken      = "/auth/token"
	pathIntrospect = "/auth/introspect"
	pathRevoke     = "/auth/revoke"
	pathJWKS       = "/auth/jwks"
	pathLogin      = "/auth/login"
	pathPick       = "/auth/pick"
	pathConsent    = "/auth/consent"
	pathLaunch     = "/auth/launch"
	pathUpstream   = "/auth/upstream"
	pathUpCallback = "/auth/upstream/callback"
	pathAdmin      = "/auth/admin/clients"
)

func (s *Server) url(path string) string { return s.cfg.BaseURL + path }

// Register mounts the server's routes on e.
func (s *Server) Register(e *echo.Echo) {
	e.GET("/.well-known/openid-configuration", s.openIDConfiguration)
	e.GET(s.fhirPath+"/.well-known/smart-configuration", s.smartConfiguration)
	e.GET(pathJWKS, s.jwksHandler)
	e.GET(pathAuthorize, s.authorize)
	e.POST(pathAuthorize, s.authorize)
	e.GET(pathLogin, s.loginPage)
	e.POST(pathLogin, s.loginSubmit)
	e.GET(pathPick, s.pickPage)
	e.POST(pathPick, s.pickSubmit)
	e.GET(pathConsent, s.consentPage)
	e.POST(pathConsent, s.consentSubmit)
	e.POST(pathToken, s.token)
	e.POST(pathIntrospect, s.introspect)
	e.POST(pathRevoke, s.revoke)
	e.POST(pathLaunch, s.createLaunch)
	e.GET(pathUpstream, s.upstreamStart)
	e.GET(pathUpCallback, s.upstreamCallback)
	e.GET(pathAdmin, s.adminList)
	e.POST(pathAdmin, s.adminPut)
	e.DELETE(pathAdmin+"/:id", s.adminDelete)
	for _, p := range []string{pathToken, pathIntrospect, pathRevoke} {
		e.OPTIONS(p, s.preflight)
	}
	e.OPTIONS("/.well-known/openid-configuration", s.preflight)
	e.OPTIONS(s.fhirPath+"/.well-known/smart-configuration", s.preflight)
	e.OPTIONS(pathJWKS, s.preflight)
}

func (s *Server) adminAuthorized(r *http.Request) bool {
	if s.cfg.AdminToken == "" {
		return false
	}
	t, ok := auth.BearerToken(r)
	if !ok {
		return false
	}
	sum := sha256.Sum256([]byte(t))
	return subtle.ConstantTimeCompare(sum[:], s.adminSum[:]) == 1
}
