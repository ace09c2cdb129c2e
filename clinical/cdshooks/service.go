package cdshooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/clinical/opioid"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Config configures the CDS Hooks service.
type Config struct {
	// BaseURL is the public URL of the server root; the services live at
	// BaseURL/cds-services/{id}, which is the aud client JWTs must carry.
	BaseURL string
	// FHIRBase is this server's FHIR base: a hook whose fhirServer is it
	// is answered from FHIR (no HTTP round trip, same authorization).
	FHIRBase string
	FHIR     *fhir.Server
	// SelfAuth puts on ctx the caller a fhirAuthorization access token
	// names (verifying it as the FHIR API does); nil when the FHIR API's
	// authorization is off.
	SelfAuth func(ctx context.Context, accessToken string) (context.Context, error)
	Table    *opioid.Table
	// Clients are the CDS clients whose JWTs are accepted. With none and
	// ClientAuthOff false every service call is refused (401).
	Clients []TrustedClient
	// ClientAuthOff accepts calls without a client JWT: development only,
	// announced in the log and on every answer.
	ClientAuthOff bool
	// Replay remembers client JWT ids (storage.KV).
	Replay ReplayStore
	// KV keeps the records of the cards returned, for their feedback, and
	// the feedback itself when FHIR is nil (default: Replay, when it is a
	// storage.KV).
	KV storage.KV
	// HTTPClient fetches from remote FHIR servers (default: 15 s timeout).
	HTTPClient *http.Client
	// Audit, when set, records each read of this server's data.
	Audit auth.AuditSink
	// MaxBody bounds a request body (default 8 MiB).
	MaxBody int64
	Logger  *slog.Logger
	// Now is the clock of client JWT checks (default time.Now).
	Now func() time.Time
}

// Service is the CDS Hooks endpoint.
type Service struct {
	cfg      Config
	log      *slog.Logger
	http     *http.Client
	clients  *clientVerifier
	services []descriptor
	base     string // BaseURL/cds-services
	naloxone *naloxoneSpec
	override []Coding // override-reasons.json
}

// descriptor is one service of discovery and its handler.
type descriptor struct {
	ID                string            `json:"id"`
	Hook              string            `json:"hook"`
	Title             string            `json:"title"`
	Description       string            `json:"description"`
	Prefetch          map[string]string `json:"prefetch,omitempty"`
	UsageRequirements string            `json:"usageRequirements,omitempty"`
	call              func(ctx context.Context, req *Request, oc *orderContext, data dataSource) ([]Card, error)
}

// dataSource returns the patient's data, prefetched or fetched.
type dataSource func(ctx context.Context) (*patientData, error)

// New builds the service. ctx bounds background JWKS fetching.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Table == nil {
		return nil, errors.New("cds hooks: no opioid table")
	}
	if cfg.BaseURL == "" {
		return nil, errors.New("cds hooks: no base URL")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 8 << 20
	}
	nal, err := loadNaloxone()
	if err != nil {
		return nil, err
	}
	override, err := loadOverrideReasons()
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: cfg.Logger, http: cfg.HTTPClient, base: strings.TrimRight(cfg.BaseURL, "/") + "/cds-services", naloxone: nal, override: override}
	if s.http == nil {
		s.http = &http.Client{Timeout: 15 * time.Second}
	}
	if cfg.ClientAuthOff {
		s.log.Warn("CDS HOOKS CLIENT AUTHENTICATION IS OFF: any caller may ask the CDS service about any patient. Use only for development.")
	} else {
		v, err := newClientVerifier(ctx, cfg.Clients, cfg.Replay, cfg.Now)
		if err != nil {
			return nil, err
		}
		s.clients = v
		if len(cfg.Clients) == 0 {
			s.log.Warn("no trusted CDS client configured: every CDS Hooks service call is refused (401)")
		}
	}
	for _, hook := range []string{HookOrderSelect, HookOrderSign} {
		s.services = append(s.services, opioidService(hook, s))
	}
	return s, nil
}

// Register adds GET /cds-services and POST /cds-services/{id} to e.
func (s *Service) Register(e *echo.Echo) {
	e.GET("/cds-services", s.discovery)
	e.POST("/cds-services/:id", s.call)
	e.POST("/cds-services/:id/feedback", s.feedback)
}

func (s *Service) devHeader(c echo.Context) {
	if s.cfg.ClientAuthOff {
		c.Response().Header().Set("X-Anodyne-CDS-Client-Auth", "off; development only")
	}
}

// discovery lists the services. It carries no patient data and, as the
// spec's clients expect, needs no JWT.
func (s *Service) discovery(c echo.Context) error {
	s.devHeader(c)
	return c.JSON(http.StatusOK, map[string]any{"services": s.services})
}

// Card is a CDS Hooks card.
type Card struct {
	UUID      string `json:"uuid,omitempty"`
	Summary   string `json:"summary"`
	Detail    string `json:"detail,omitempty"`
	Indicator string `json:"indicator"`
	Source    Source `json:"source"`
	// Suggestions and SelectionBehavior ("any": several may be taken).
	Suggestions       []Suggestion `json:"suggestions,omitempty"`
	SelectionBehavior string       `json:"selectionBehavior,omitempty"`
	// OverrideReasons a user may give when not following the card (2.0).
	OverrideReasons []Coding `json:"overrideReasons,omitempty"`
	Links           []Link   `json:"links,omitempty"`
}

// Source names who produced a card.
type Source struct {
	Label string `json:"label"`
	URL   string `json:"url,omitempty"`
	Topic *struct {
		System  string `json:"system,omitempty"`
		Code    string `json:"code"`
		Display string `json:"display,omitempty"`
	} `json:"topic,omitempty"`
}

// Link is a card link.
type Link struct {
	Label string `json:"label"`
	URL   string `json:"url"`
	Type  string `json:"type"`
}

func (s *Service) call(c echo.Context) error {
	s.devHeader(c)
	ctx := c.Request().Context()
	id := c.Param("id")
	var hooks []string
	for _, d := range s.services {
		if d.ID == id {
			hooks = append(hooks, d.Hook)
		}
	}
	if len(hooks) == 0 {
		return s.fail(c, &callError{Status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf("no CDS service %q (see %s)", id, s.base)})
	}
	client, err := s.authenticate(c, s.base+"/"+id, s.base)
	if err != nil {
		return s.fail(c, err)
	}
	body, err := s.readBody(c)
	if err != nil {
		return s.fail(c, err)
	}
	req, oc, err := decodeRequest(body, hooks)
	if err != nil {
		return s.fail(c, err)
	}
	// The hook's token for this server is checked now, prefetch or not: a
	// client that hands over authority the server does not grant, or a
	// grant for another patient, is told so rather than half answered.
	selfCtx, err := s.checkSelfAuthorization(ctx, req, oc.PatientID)
	if err != nil {
		return s.fail(c, err)
	}
	var d descriptor
	for _, x := range s.services {
		if x.ID == id && x.Hook == req.Hook {
			d = x
		}
	}
	cards, err := d.call(ctx, req, oc, s.source(req, oc.PatientID, client, selfCtx))
	if err != nil {
		return s.fail(c, err)
	}
	s.log.InfoContext(ctx, "CDS Hooks call", "service", id, "hook", req.Hook, "hookInstance", req.HookInstance, "client", client, "cards", len(cards))
	if cards == nil {
		cards = []Card{}
	}
	s.recordCards(ctx, id, client, req, oc, cards)
	return c.JSON(http.StatusOK, map[string]any{"cards": cards})
}

// authenticate checks the CDS client's JWT (aud one of audiences) and
// returns the client's issuer.
func (s *Service) authenticate(c echo.Context, audiences ...string) (string, error) {
	if s.clients == nil {
		return anonymousClient, nil
	}
	ctx := c.Request().Context()
	raw, ok := auth.BearerToken(c.Request())
	if !ok {
		return "", &callError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "a JWT signed by a trusted CDS client is required (Authorization: Bearer)"}
	}
	iss, err := s.clients.verify(ctx, raw, audiences)
	if err != nil {
		s.log.InfoContext(ctx, "CDS client JWT refused", "err", err)
		return "", &callError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "the CDS client JWT is invalid: " + err.Error()}
	}
	return iss, nil
}

// anonymousClient names the caller when client authentication is off.
const anonymousClient = "anonymous (client authentication off)"

// readBody reads a JSON request body within MaxBody.
func (s *Service) readBody(c echo.Context) ([]byte, error) {
	if ct := c.Request().Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return nil, &callError{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type", Message: "the request must be application/json"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, s.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &callError{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Message: fmt.Sprintf("the request is larger than %d bytes", s.cfg.MaxBody)}
		}
		return nil, badRequest("reading the request: %v", err)
	}
	return body, nil
}

// source returns the patient's data: the prefetch when the client sent
// it, else fetched from fhirServer (this server through its own API, as
// the caller selfCtx carries).
func (s *Service) source(req *Request, patient, client string, selfCtx context.Context) dataSource {
	return func(ctx context.Context) (*patientData, error) {
		meds, ok, err := req.prefetched("medications")
		if err != nil {
			return nil, err
		}
		if ok {
			if meds["resourceType"] != "Bundle" {
				return nil, badRequest("prefetch \"medications\" must be a Bundle, not a %v", meds["resourceType"])
			}
			all := bundleResources(meds)
			return &patientData{requests: activeFor(all, patient), resolve: resolverOf(all, nil), source: "prefetch"}, nil
		}
		if req.FHIRServer == "" {
			return nil, preconditionFailed("medications were not prefetched and the request names no fhirServer to fetch them from")
		}
		if s.isSelf(req.FHIRServer) {
			if selfCtx != nil {
				ctx = selfCtx
			}
			return s.fetchSelf(ctx, req, patient, client)
		}
		if s.clients != nil && !allowedServer(s.clients.allow[client], req.FHIRServer) {
			return nil, preconditionFailed("medications were not prefetched and fhirServer %s is not one this CDS client may have the service fetch from", req.FHIRServer)
		}
		return s.fetchRemote(ctx, req, patient)
	}
}

// allowedServer reports whether a client's list (empty: any) names server.
func allowedServer(list []string, server string) bool {
	if len(list) == 0 {
		return true
	}
	for _, a := range list {
		if normURL(a) == normURL(server) {
			return true
		}
	}
	return false
}

func normURL(u string) string { return strings.ToLower(strings.TrimRight(u, "/")) }

// isSelf reports whether a fhirServer URL is this server's FHIR base.
func (s *Service) isSelf(server string) bool {
	return s.cfg.FHIRBase != "" && normURL(server) == normURL(s.cfg.FHIRBase)
}

// audit records a read of this server's data on behalf of the hook.
// ctx carries the caller the hook's token named, when it was accepted.
func (s *Service) audit(ctx context.Context, req *Request, patient, client string, err error) {
	if s.cfg.Audit == nil {
		return
	}
	ev := auth.NewAuditEvent(ctx, "operation", "E", "Patient")
	ev.IDs = []string{patient}
	if !contains(ev.Patients, patient) {
		ev.Patients = append(ev.Patients, patient)
	}
	ev.Outcome = http.StatusOK
	var ce *callError
	if errors.As(err, &ce) {
		ev.Outcome = ce.Status
	} else if err != nil {
		ev.Outcome = http.StatusInternalServerError
	}
	ev.Source = s.cfg.FHIRBase
	ev.Query = "cds-hooks=" + req.Hook + "&hookInstance=" + req.HookInstance
	ev.Description = "CDS Hooks " + req.Hook + " for CDS client " + client
	if rerr := s.cfg.Audit.RecordAudit(ctx, ev); rerr != nil {
		s.log.ErrorContext(ctx, "audit event of a CDS Hooks read not recorded", "err", rerr)
	}
}

// fail writes a CDS-Hooks-style error: the status and a JSON body.
func (s *Service) fail(c echo.Context, err error) error {
	var ce *callError
	if !errors.As(err, &ce) {
		s.log.ErrorContext(c.Request().Context(), "CDS Hooks call failed", "err", err)
		ce = &callError{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error (the server log has the cause)"}
	}
	if ce.Status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="cds-services"`)
	}
	return c.JSON(ce.Status, map[string]any{"error": ce.Code, "message": ce.Message})
}
