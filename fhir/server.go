// Package fhir is Anodyne's FHIR R4 RESTful API: routing, the interactions
// (create, read, vread, update, patch, delete, history, search, $validate,
// capabilities), content negotiation, Bundles and OperationOutcomes, and
// the FHIR meaning of versions (meta, ETag, If-Match, conditional reads).
//
// It talks to the database only through storage.Backend and must not know
// which backend it has; it asks the conformance package whether a body is
// valid and the resources package what a type's search parameters are, and
// must not re-implement either. Authorization is an injected decision
// (Authorizer) applied on every path a resource leaves by; this package
// does not know how tokens or scopes work.
package fhir

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/conformance/profile"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/lease"
)

// Config configures a Server.
type Config struct {
	// BaseURL is the public URL of the server root (scheme://host[:port][/prefix]),
	// used for every absolute URL the server writes; the FHIR base is
	// BaseURL + "/fhir". It is never derived from the Host header.
	BaseURL string
	// Backend stores everything. Required.
	Backend storage.Backend
	// Validator checks request bodies; nil loads conformance.NewValidator().
	Validator *conformance.Validator
	// Profiles validates every client write against the core R4
	// definitions and the profiles it claims, backs $validate?profile=
	// and conformsTo(); nil switches profile validation off (anodyne serve
	// always sets it: loading the definitions takes most of a second).
	Profiles *profile.Registry
	// SkipCoreInvariants leaves out the core definitions (structure and
	// invariants) on writes; claimed profiles are still checked in full.
	SkipCoreInvariants bool
	// Registry knows search parameters and index extraction; nil loads
	// resources.Load with this server's base URL and logger.
	Registry *resources.Registry
	// Authorizer decides every access; nil means authorization is off.
	Authorizer Authorizer
	// Middleware, when set, runs before every /fhir handler except
	// /fhir/metadata (which is public, as SMART discovery requires); it is
	// where the auth package authenticates the request.
	Middleware echo.MiddlewareFunc
	// Logger receives structured logs; nil uses slog.Default().
	Logger *slog.Logger
	// MaxBodyBytes caps request bodies (413 beyond); 0 means 16 MiB.
	MaxBodyBytes int64
	// Security, when set, is the CapabilityStatement rest.security element
	// (the SMART authorization server's description of itself).
	Security map[string]any
	// CursorKey signs paging cursors. Replicas behind one load balancer
	// must share it; nil draws a random key, so links die with the process.
	CursorKey []byte
	// ExportDir holds Bulk Data export files (one directory per job). With
	// several processes on one store it must be a directory they all share.
	// Job state lives in the Backend's KV.
	ExportDir string
	// ExportInStore keeps export files in the Backend's KV instead (chunked
	// records), so that every process sharing the store serves every job's
	// files. $export is enabled when it is set or ExportDir is not empty;
	// ExportDir wins when both are.
	ExportInStore bool
	// LeaseTTL is how long background work (an export job, the reindexing
	// for a new SearchParameter) stays with a process that stopped renewing
	// its lease (crashed, partitioned) before another process takes it over
	// and resumes it from its checkpoint; 0 means 30s.
	LeaseTTL time.Duration
	// ExportWorkers is how many export jobs run at once in this process:
	// 0 means 1; negative means none (another replica runs the jobs).
	ExportWorkers int
	// Observers see every change before it is committed and add what it
	// derives to the same Commit (see CommitObserver), in this order.
	Observers []CommitObserver
	// SerializeInProcess makes CommitSet.Serialize lock within this process
	// only, saving two KV writes per serialized Commit: for a store no other
	// server process writes. By default it also takes a lease in the
	// store's KV, so that servers sharing the store take turns.
	SerializeInProcess bool
	// PatientOperations are GET [base]/Patient/{id}/$name operations
	// computed above this package (see PatientOperation).
	PatientOperations []PatientOperation
	// ResourceOperations are [base]/Type/{id}/$name operations computed
	// above this package (see ResourceOperation).
	ResourceOperations []ResourceOperation
	// Capability, when set, may add to the generated CapabilityStatement
	// (extensions of what is served above this package) before it is
	// encoded; it must not remove what the route table declares.
	Capability func(cs map[string]any)
	// Redact, when set, masks stored elements of the named resource types
	// that no reader may receive as stored (a Subscription's channel
	// credentials): emit applies it on every path a resource of the type
	// leaves by, before the caller's View. It may consult the caller on
	// ctx and must only remove or mask.
	Redact map[string]func(ctx context.Context, res map[string]any) error
	// Output, when set, sees every resource that leaves the server (see
	// OutputFilter); nil sends stored resources unchanged.
	Output OutputFilter
	// OnRequest, when set, is told of every finished request (including
	// those of endpoints mounted on Echo() by other packages), for metrics.
	// It runs on the request's goroutine and must be quick.
	OnRequest func(RequestInfo)
	// OnJob, when set, is told when a background job changes state: kind
	// "export" with "accepted", "completed", "failed" or "deleted" (by the
	// client or at expiry).
	OnJob func(kind, state string)
}

// RequestInfo describes a finished request for OnRequest.
type RequestInfo struct {
	// Interaction is the R4 interaction code ("read", "search-type"), the
	// operation ("$export"), "capabilities", or "" for a request outside
	// the FHIR route table (authorization endpoints, unmatched paths).
	Interaction string
	// Type is the resource type of a type or instance interaction; ""
	// otherwise and for a path naming no R4 type.
	Type     string
	Method   string
	Status   int
	Duration time.Duration
	// Request is the request as the handlers saw it (its context carries
	// the trace span, the Principal).
	Request *http.Request
}

// Server serves the FHIR REST API.
type Server struct {
	base      string // FHIR base, no trailing slash
	backend   storage.Backend
	validator *conformance.Validator
	profiles  *profile.Registry
	skipCore  bool
	registry  *resources.Registry
	authz     Authorizer
	log       *slog.Logger
	maxBody   int64
	cursorKey []byte
	security  map[string]any
	echo      *echo.Echo
	// capability is generated once: the routes and registry do not change
	// while the server runs.
	capability []byte
	bulk       *bulkRunner // nil when bulk export is disabled
	// leaseOwner names this server in the leases of background work;
	// leaseTTL is Config.LeaseTTL (defaulted).
	leaseOwner string
	leaseTTL   time.Duration
	observers  []CommitObserver
	keyLocks   keyLocks // CommitSet.Serialize
	onRequest  func(RequestInfo)
	onJob      func(kind, state string)
	output     OutputFilter
	patientOps []PatientOperation
	resOps     []ResourceOperation
	capHook    func(cs map[string]any)
	redact     map[string]func(ctx context.Context, res map[string]any) error
	lastnProbe int // $lastn's in-memory page (lastnDefaultProbe; tests lower it)
}

const defaultMaxBody = 16 << 20

// New builds a Server and its routes.
func New(cfg Config) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("fhir: Config.Backend is required")
	}
	base := strings.TrimRight(cfg.BaseURL, "/")
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, fmt.Errorf("fhir: BaseURL %q must be an absolute http(s) URL", cfg.BaseURL)
	}
	s := &Server{
		base:      base + "/fhir",
		backend:   cfg.Backend,
		validator: cfg.Validator,
		profiles:  cfg.Profiles,
		skipCore:  cfg.SkipCoreInvariants,
		registry:  cfg.Registry,
		authz:     cfg.Authorizer,
		log:       cfg.Logger,
		maxBody:   cfg.MaxBodyBytes,
		cursorKey: cfg.CursorKey,
		security:  cfg.Security,
		observers: cfg.Observers,
		onRequest: cfg.OnRequest,
		onJob:     cfg.OnJob,
		output:    cfg.Output,
		capHook:   cfg.Capability,
		redact:    cfg.Redact,

		leaseOwner: lease.NewOwner(),
		leaseTTL:   cfg.LeaseTTL,
	}
	if s.leaseTTL <= 0 {
		s.leaseTTL = defaultLeaseTTL
	}
	if !cfg.SerializeInProcess {
		s.keyLocks.kv, s.keyLocks.owner, s.keyLocks.ttl = cfg.Backend.KV(), s.leaseOwner, min(s.leaseTTL, serializeLeaseTTL)
	}
	for _, op := range cfg.PatientOperations {
		if op.Name == "" || op.Run == nil {
			return nil, errors.New("fhir: a PatientOperation needs a Name and a Run")
		}
		if id, _ := op.Definition["id"].(string); !ValidID(id) {
			return nil, fmt.Errorf("fhir: the OperationDefinition of $%s needs a valid id", op.Name)
		}
		s.patientOps = append(s.patientOps, op)
	}
	for _, op := range cfg.ResourceOperations {
		if !isResourceType(op.Type) || op.Name == "" || op.Run == nil {
			return nil, errors.New("fhir: a ResourceOperation needs a resource Type, a Name and a Run")
		}
		if id, _ := op.Definition["id"].(string); !ValidID(id) {
			return nil, fmt.Errorf("fhir: the OperationDefinition of %s/$%s needs a valid id", op.Type, op.Name)
		}
		s.resOps = append(s.resOps, op)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.maxBody <= 0 {
		s.maxBody = defaultMaxBody
	}
	var err error
	if s.validator == nil {
		if s.validator, err = conformance.NewValidator(); err != nil {
			return nil, fmt.Errorf("fhir: loading validator: %w", err)
		}
	}
	if s.registry == nil {
		// The registry must know our base so that absolute references to
		// this server are indexed like relative ones.
		if s.registry, err = resources.Load(resources.WithBaseURL(s.base), resources.WithLogger(s.log)); err != nil {
			return nil, fmt.Errorf("fhir: loading search parameter registry: %w", err)
		}
	}
	if len(s.cursorKey) == 0 {
		s.cursorKey = make([]byte, 32)
		if _, err := rand.Read(s.cursorKey); err != nil {
			return nil, fmt.Errorf("fhir: drawing cursor key: %w", err)
		}
	}
	s.echo = s.routes(cfg.Middleware)
	switch {
	case cfg.ExportDir != "":
		s.bulk = newBulkRunner(s, dirFiles{dir: cfg.ExportDir}, bulkWorkers(cfg.ExportWorkers))
	case cfg.ExportInStore:
		s.bulk = newBulkRunner(s, kvFiles{kv: s.backend.KV(), chunk: exportChunkSize}, bulkWorkers(cfg.ExportWorkers))
	}
	// After the runner: the statement declares $export only when it runs.
	if s.capability, err = s.capabilityStatement(); err != nil {
		s.Close()
		return nil, fmt.Errorf("fhir: building CapabilityStatement: %w", err)
	}
	return s, nil
}

// Handler returns the HTTP handler: the FHIR API under /fhir, /healthz and /readyz.
func (s *Server) Handler() http.Handler { return s.echo }

// Echo returns the underlying router so that other packages (auth) can
// mount their own endpoints next to the FHIR API.
func (s *Server) Echo() *echo.Echo { return s.echo }

// level is where an interaction applies (CapabilityStatement rest.resource
// vs rest.interaction).
type level uint8

const (
	levelInstance level = iota + 1
	levelType
	levelSystem
)

// route is one row of the table that both routes requests and generates
// the CapabilityStatement, so the statement cannot claim an interaction
// that has no handler.
type route struct {
	method string
	path   string // under /fhir
	level  level
	// code is the R4 interaction code (restful-interaction), or "$name"
	// for an operation, or "" for routes that are not interactions.
	code    string
	handler func(*Server, echo.Context) error
	// typ is the one resource type a fixed path serves ("" for :type).
	typ string
	// bulk marks Bulk Data operations, declared only when export is on.
	bulk bool
	// raw skips FHIR content negotiation (file downloads).
	raw bool
}

func routeTable() []route {
	return []route{
		{method: http.MethodGet, path: "/metadata", level: levelSystem, code: "capabilities", handler: (*Server).capabilities},
		{method: http.MethodPost, path: "", level: levelSystem, code: "transaction", handler: (*Server).bundle},
		{method: http.MethodPost, path: "/", level: levelSystem, code: "transaction", handler: (*Server).bundle},
		{method: http.MethodGet, path: "/_history", level: levelSystem, code: "history-system", handler: (*Server).historySystem},
		{method: http.MethodGet, path: "", level: levelSystem, code: "search-system", handler: (*Server).searchSystem},
		// The base with a trailing slash is the same endpoint (as for POST).
		{method: http.MethodGet, path: "/", level: levelSystem, code: "search-system", handler: (*Server).searchSystem},
		{method: http.MethodPost, path: "/_search", level: levelSystem, code: "search-system", handler: (*Server).searchSystem},
		{method: http.MethodGet, path: "/:type/:id/:comp", level: levelType, code: "search-type", handler: (*Server).searchCompartment},
		{method: http.MethodGet, path: "/:type/:id/$reindex-status", level: levelInstance, code: "", handler: (*Server).reindexStatus},
		{method: http.MethodPost, path: "/:type", level: levelType, code: "create", handler: (*Server).create},
		{method: http.MethodGet, path: "/:type", level: levelType, code: "search-type", handler: (*Server).searchType},
		{method: http.MethodPost, path: "/:type/_search", level: levelType, code: "search-type", handler: (*Server).searchType},
		{method: http.MethodGet, path: "/:type/_history", level: levelType, code: "history-type", handler: (*Server).historyType},
		{method: http.MethodPost, path: "/:type/$validate", level: levelType, code: "$validate", handler: (*Server).validateType},
		{method: http.MethodPut, path: "/:type", level: levelType, code: "update", handler: (*Server).conditionalUpdate},
		{method: http.MethodDelete, path: "/:type", level: levelType, code: "delete", handler: (*Server).conditionalDelete},
		{method: http.MethodGet, path: "/Observation/$lastn", level: levelType, code: "$lastn", handler: (*Server).lastn, typ: "Observation"},
		{method: http.MethodPost, path: "/Observation/$lastn", level: levelType, code: "$lastn", handler: (*Server).lastn, typ: "Observation"},
		{method: http.MethodGet, path: "/Observation/$stats", level: levelType, code: "$stats", handler: (*Server).stats, typ: "Observation"},
		{method: http.MethodPost, path: "/Observation/$stats", level: levelType, code: "$stats", handler: (*Server).stats, typ: "Observation"},
		{method: http.MethodGet, path: "/:type/$everything", level: levelType, code: "$everything", handler: (*Server).everythingType},
		{method: http.MethodGet, path: "/:type/:id/$everything", level: levelInstance, code: "$everything", handler: (*Server).everything},
		{method: http.MethodGet, path: "/:type/:id", level: levelInstance, code: "read", handler: (*Server).read},
		{method: http.MethodGet, path: "/:type/:id/_history/:vid", level: levelInstance, code: "vread", handler: (*Server).vread},
		{method: http.MethodPut, path: "/:type/:id", level: levelInstance, code: "update", handler: (*Server).update},
		{method: http.MethodPatch, path: "/:type/:id", level: levelInstance, code: "patch", handler: (*Server).patch},
		{method: http.MethodDelete, path: "/:type/:id", level: levelInstance, code: "delete", handler: (*Server).delete},
		{method: http.MethodGet, path: "/:type/:id/_history", level: levelInstance, code: "history-instance", handler: (*Server).historyInstance},
		{method: http.MethodPost, path: "/:type/:id/$validate", level: levelInstance, code: "$validate", handler: (*Server).validateInstance},
		// Bulk Data (bulkdata IG v2). Declared only when an export directory
		// is configured; without one the kick-offs answer 501.
		{method: http.MethodGet, path: "/$export", level: levelSystem, code: "$export", handler: (*Server).exportSystem, bulk: true},
		{method: http.MethodGet, path: "/Patient/$export", level: levelType, code: "$export", handler: (*Server).exportPatients, typ: "Patient", bulk: true},
		{method: http.MethodGet, path: "/Group/:id/$export", level: levelInstance, code: "$export", handler: (*Server).exportGroup, typ: "Group", bulk: true},
		{method: http.MethodGet, path: "/$export-status/:job", level: levelSystem, code: "", handler: (*Server).exportStatus},
		{method: http.MethodDelete, path: "/$export-status/:job", level: levelSystem, code: "", handler: (*Server).exportCancel},
		// Clients ask for the files with Accept: application/fhir+ndjson,
		// which FHIR content negotiation would refuse.
		{method: http.MethodGet, path: "/$export-file/:job/:file", level: levelSystem, code: "", handler: (*Server).exportFile, raw: true},
		// The synchronous NDJSON push of "anodyne import --server" has no
		// published OperationDefinition (the bulk $import draft is
		// asynchronous, with a manifest), so it is routed but not declared.
		{method: http.MethodPost, path: "/$import", level: levelSystem, code: "", handler: (*Server).importNDJSON},
	}
}

func (s *Server) routes(authMW echo.MiddlewareFunc) *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.errorHandler
	// The source address in logs and AuditEvents is the request's
	// RemoteAddr: the TCP peer, or the client a trusted proxy names
	// (cmd/anodyne --trusted-proxy rewrites it before the router). Echo's
	// default trusts X-Forwarded-For and X-Real-IP from any client, which
	// would let a caller forge the address its accesses are recorded under.
	e.IPExtractor = echo.ExtractIPDirect()
	e.Use(s.logRequests, s.recoverPanic)
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)

	// Middleware goes on each route rather than on the group: Echo answers
	// a group's unmatched methods with 404 instead of 405 once the group
	// has middleware.
	g := e.Group("/fhir")
	for _, r := range routeTable() {
		h := r.handler
		code, typ := r.code, r.typ
		// First, so that a request refused by a later middleware (no
		// token: 401) is still reported under its interaction.
		mws := []echo.MiddlewareFunc{func(next echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error {
				c.Set(interactionKey, code)
				if typ != "" {
					c.Set(typeKey, typ)
				}
				return next(c)
			}
		}}
		if !r.raw {
			mws = append(mws, negotiate)
		}
		if authMW != nil && r.code != "capabilities" {
			mws = append(mws, authMW)
		}
		g.Add(r.method, r.path, func(c echo.Context) error { return h(s, c) }, mws...)
	}
	mws := []echo.MiddlewareFunc{negotiate}
	if authMW != nil {
		mws = append(mws, authMW)
	}
	for _, op := range s.patientOps {
		g.GET("/Patient/:id/$"+op.Name, s.patientOperation(op), mws...)
	}
	for _, op := range s.resOps {
		code, typ := "$"+op.Name, op.Type
		tag := func(next echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error {
				c.Set(interactionKey, code)
				c.Set(typeKey, typ)
				return next(c)
			}
		}
		g.GET("/"+op.Type+"/:id/$"+op.Name, s.resourceOperation(op), append([]echo.MiddlewareFunc{tag}, mws...)...)
		g.POST("/"+op.Type+"/:id/$"+op.Name, s.resourceOperation(op), append([]echo.MiddlewareFunc{tag}, mws...)...)
		if op.RunType != nil {
			g.GET("/"+op.Type+"/$"+op.Name, s.resourceTypeOperation(op), append([]echo.MiddlewareFunc{tag}, mws...)...)
			g.POST("/"+op.Type+"/$"+op.Name, s.resourceTypeOperation(op), append([]echo.MiddlewareFunc{tag}, mws...)...)
		}
	}
	// The definitions of the operations the server declares ($lastn,
	// $stats, the patient operations) are read here; other ids are stored
	// resources.
	g.GET("/OperationDefinition/:id", s.operationDefinitionRead, mws...)
	return e
}

// logRequests gives each request an id and logs it once, after the
// response (including error responses) is written.
func (s *Server) logRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		req := c.Request()
		id := req.Header.Get(echo.HeaderXRequestID)
		if !validRequestID(id) {
			id = randomID()
		}
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		c.SetRequest(req.WithContext(context.WithValue(req.Context(), requestIDKey{}, id)))
		if err := next(c); err != nil {
			c.Error(err)
		}
		status := c.Response().Status
		lvl := slog.LevelInfo
		if status >= 500 {
			lvl = slog.LevelError
		}
		took := time.Since(start)
		s.log.Log(req.Context(), lvl, "http request",
			"request_id", id, "method", req.Method, "path", req.URL.Path,
			"status", status, "duration_ms", float64(took.Microseconds())/1000)
		if s.onRequest != nil {
			s.onRequest(requestInfo(c, status, took))
		}
		return nil
	}
}

type requestIDKey struct{}

// Echo context keys of the route a request matched.
const (
	interactionKey = "anodyne.interaction"
	typeKey        = "anodyne.type"
)

func (s *Server) jobEvent(kind, state string) {
	if s.onJob != nil {
		s.onJob(kind, state)
	}
}

func requestInfo(c echo.Context, status int, took time.Duration) RequestInfo {
	ri := RequestInfo{Method: c.Request().Method, Status: status, Duration: took, Request: c.Request()}
	ri.Interaction, _ = c.Get(interactionKey).(string)
	if t, ok := c.Get(typeKey).(string); ok {
		ri.Type = t
	} else if ri.Interaction != "" && isResourceType(c.Param("type")) {
		ri.Type = c.Param("type")
	}
	return ri
}

// RequestID returns the id logRequests gave the request, for fault logs.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// recoverPanic turns a panic, always a server bug, into a logged 500
// OperationOutcome instead of a dropped connection.
func (s *Server) recoverPanic(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.ErrorContext(c.Request().Context(), "panic in handler", "request_id", RequestID(c.Request().Context()), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = &Error{Status: http.StatusInternalServerError, Issues: []conformance.Issue{{
					Severity: "fatal", Code: codeException, Diagnostics: "internal server error",
				}}}
			}
		}()
		return next(c)
	}
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 3*time.Second)
	defer cancel()
	if err := s.backend.Ping(ctx); err != nil {
		// The cause stays in the log: /readyz answers without a token.
		s.log.WarnContext(ctx, "readiness check failed", "err", err)
		c.Response().Header().Set("Retry-After", "5")
		return writeResource(c, http.StatusServiceUnavailable, outcome([]conformance.Issue{{
			Severity: "error", Code: "transient",
			Diagnostics: "not ready: the database did not answer its ping (the server log has the cause)",
		}}))
	}
	out := map[string]any{"status": "ready"}
	if d, ok := storage.As[storage.Describer](s.backend); ok {
		// What the deployment can do, for an operator checking a new
		// database (the capabilities are detected once, at start-up).
		caps := d.Capabilities(ctx)
		out["database"] = map[string]any{
			"backend": caps.Name, "version": caps.Version, "topology": caps.Topology,
			"transactions": caps.Transactions, "atomicCommit": caps.AtomicCommit,
		}
	}
	return c.JSON(http.StatusOK, out)
}

// randomID returns a random UUID (version 4), used for server-assigned
// resource ids and request ids.
func randomID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on supported platforms (Go 1.24+ panics
		// inside Read instead of returning an error).
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}
