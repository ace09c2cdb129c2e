// Command anodyne runs the Anodyne FHIR R4 server.
//
// It owns configuration (flags and ANODYNE_* environment variables), the
// choice of storage backend (a plain switch: embedded SQLite by default,
// MongoDB when a URI is given) and the process lifecycle (listen, drain on
// SIGTERM, close the database). It must not contain FHIR logic: that lives
// in package fhir and below.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/anodyne-fhir/anodyne/apps/clinician"
	"github.com/anodyne-fhir/anodyne/clinical/opioidsafety"
	"github.com/anodyne-fhir/anodyne/conformance/profile"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/metrics"
	"github.com/anodyne-fhir/anodyne/storage"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv, nil)
	stop()
	code := exitCode(err)
	if code != 0 {
		fmt.Fprintln(os.Stderr, "anodyne:", err)
	}
	os.Exit(code)
}

// run dispatches the command through the table of commands(). ready,
// when not nil, receives the bound address once the server listens
// (tests use it with --listen 127.0.0.1:0).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string, ready chan<- string) error {
	cio := cmdIO{stdin: os.Stdin, stdout: stdout, stderr: stderr, getenv: getenv, ready: ready}
	if len(args) == 0 {
		printUsage(stderr)
		return usagef("missing command")
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		name = "help"
	}
	c, ok := lookupCommand(name)
	if !ok {
		printUsage(stderr)
		return usagef("unknown command %q", name)
	}
	if wantsHelp(args[1:]) {
		cio.stderr = stdout
	}
	return c.run(ctx, args[1:], cio)
}

// serveConfig is the configuration of "anodyne serve".
type serveConfig struct {
	// DeidRules is the de-identification rules file of research access
	// (empty: the embedded default).
	DeidRules string
	Listen    string
	BaseURL   string
	DataDir   string
	MongoURI  string
	MongoDB   string
	// MongoConnect bounds the wait for MongoDB's first answer at start.
	MongoConnect time.Duration
	Auth         string
	MaxBody      int64
	LogFormat    string
	LogLevel     string
	ShutdownIn   time.Duration
	// SPPoll is how often the store is checked for new or changed
	// SearchParameter resources (custom search parameters).
	SPPoll time.Duration
	// CoreInvariants checks the core R4 definitions (invariants ele-1,
	// dom-*, obs-* ...) on every write; claimed profiles are always checked.
	CoreInvariants bool
	Sec            securityConfig
	Transport      transportConfig
	Metrics        metricsConfig
	Export         exportFlags
	Subs           subscriptionConfig

	// OpioidTable extends the embedded opioid table (empty: embedded only).
	OpioidTable string
	// Serialize is how the clinical observers take turns per patient:
	// "store" (a lease in the store's KV, for several servers on one
	// database) or "process" (within this process only).
	Serialize string
	CDS       cdsConfig
	// preload, when set ("anodyne demo"), runs on the ready server before
	// it accepts requests.
	preload func(ctx context.Context, srv *fhir.Server, be storage.Backend, base string) error
}

// parseServe reads flags, each of which may also come from ANODYNE_<NAME>
// (upper case, dashes as underscores); a flag on the command line wins.
func parseServe(args []string, stderr io.Writer, getenv func(string) string) (serveConfig, error) {
	return parseServeAs("serve", "Runs the FHIR R4 server.", args, stderr, getenv)
}

// parseServeAs is parseServe for a command that runs the server under
// another name (anodyne demo), with that name in its usage.
func parseServeAs(name, about string, args []string, stderr io.Writer, getenv func(string) string) (serveConfig, error) {
	var cfg serveConfig
	fs := flag.NewFlagSet("anodyne "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.DeidRules, "deid-rules", "", "de-identification rules file for research clients (default: the embedded Safe Harbor rules)")
	fs.StringVar(&cfg.OpioidTable, "opioid-table", "", opioidTableHelp)
	fs.StringVar(&cfg.Serialize, "serialize", "store", "how the clinical logic (MME totals, remote-monitoring alerts) takes turns per patient: store (a lease in the database, so that several servers on one database never derive from the same state at once) or process (within this process only, two fewer database writes per clinical write; only when no other server writes the database)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "address to listen on (host:port)")
	fs.StringVar(&cfg.BaseURL, "base-url", "", "public URL of the server root used in every absolute URL; the FHIR base is <base-url>/fhir (default http://<listen>)")
	fs.StringVar(&cfg.DataDir, "data-dir", "./anodyne-data", "directory of the embedded SQLite database (ignored with --mongodb-uri)")
	fs.StringVar(&cfg.MongoURI, "mongodb-uri", "", "store everything in MongoDB at this URI instead of the embedded SQLite")
	fs.StringVar(&cfg.MongoDB, "mongodb-database", "anodyne", "MongoDB database name (with --mongodb-uri)")
	fs.DurationVar(&cfg.MongoConnect, "mongodb-connect-timeout", defaultMongoConnect, "how long to wait at start for MongoDB to answer before failing (with --mongodb-uri)")
	fs.StringVar(&cfg.Auth, "auth", "on", "authorization: on (every FHIR request needs a SMART access token; the built-in SMART server runs under /auth) or off (development only: anyone may read and write everything)")
	fs.Int64Var(&cfg.MaxBody, "max-body", 16<<20, "largest accepted request body in bytes (413 beyond)")
	fs.StringVar(&cfg.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&cfg.ShutdownIn, "shutdown-timeout", 30*time.Second, "how long SIGTERM waits for in-flight requests")
	fs.DurationVar(&cfg.SPPoll, "searchparameter-poll", 5*time.Second, "how often to look for new or changed SearchParameter resources (custom search parameters), which are then registered and reindexed")
	fs.BoolVar(&cfg.CoreInvariants, "core-invariants", true, "check every written resource against the core R4 definitions and invariants (ele-1, dom-2..dom-6, obs-6 ...); profiles a resource claims in meta.profile are checked either way")
	cfg.Sec.register(fs)
	cfg.Transport.register(fs)
	cfg.Metrics.register(fs)
	cfg.Export.register(fs)
	cfg.Subs.register(fs)
	cfg.CDS.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: anodyne %s [flags]\n\n%s Every flag can also be set with an environment\nvariable ANODYNE_<FLAG> (for example ANODYNE_MONGODB_URI); flags win.\n\nFlags:\n", name, about)
		fs.PrintDefaults()
	}
	if err := applyEnv(fs, getenv); err != nil {
		return cfg, err
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if err := checkServe(&cfg, fs.Args()); err != nil {
		fmt.Fprintf(stderr, "Usage: anodyne %s [flags] (run \"anodyne %s --help\" for the flags)\n", name, name)
		return cfg, err
	}
	return cfg, nil
}

// checkServe validates a parsed serve configuration.
func checkServe(cfg *serveConfig, rest []string) error {
	if len(rest) > 0 {
		return fmt.Errorf("unexpected arguments: %v", rest)
	}
	switch cfg.Auth {
	case "off", "on":
	default:
		return fmt.Errorf("--auth must be on or off, not %q", cfg.Auth)
	}
	switch cfg.Serialize {
	case "store", "process":
	default:
		return fmt.Errorf("--serialize must be store or process, not %q", cfg.Serialize)
	}
	if err := cfg.Sec.validate(cfg.Auth == "on"); err != nil {
		return err
	}
	if err := cfg.Transport.validate(); err != nil {
		return err
	}
	if err := cfg.Subs.validate(); err != nil {
		return err
	}
	if err := cfg.CDS.validate(); err != nil {
		return err
	}
	if cfg.MaxBody <= 0 {
		return errors.New("--max-body must be positive")
	}
	if cfg.SPPoll <= 0 {
		return errors.New("--searchparameter-poll must be positive")
	}
	return cfg.Export.validate()
}

// applyEnv sets each flag of fs from ANODYNE_<NAME> (upper case, dashes
// as underscores) when that variable is set; call it before fs.Parse so
// that the command line wins.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := "ANODYNE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	})
	return envErr
}

func newLogger(cfg serveConfig, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch cfg.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, not %q", cfg.LogFormat)
}

// logCapabilities tells operators at start-up what the database cannot do:
// its own notes, and whether transaction Bundles are refused (they are
// when several writes cannot be committed all-or-nothing).
func logCapabilities(ctx context.Context, log *slog.Logger, backend storage.Backend) {
	caps := storage.Capabilities{}
	if d, ok := storage.As[storage.Describer](backend); ok {
		caps = d.Capabilities(ctx)
	}
	log.Info("database deployment", "backend", caps.Name, "version", caps.Version, "topology", caps.Topology,
		"transactions", caps.Transactions, "atomic_commit", caps.AtomicCommit)
	for _, n := range caps.Notes {
		log.Warn("database capability", "backend", caps.Name, "note", n)
	}
	if !caps.AtomicCommit {
		log.Warn("database capability", "backend", caps.Name,
			"note", "no atomic multi-write commit: transaction Bundles are refused (batch Bundles work)")
	}
}

// serve runs the server until ctx is cancelled (SIGTERM/SIGINT), then
// drains in-flight requests and closes the database.
func serve(ctx context.Context, cfg serveConfig, logOut io.Writer, ready chan<- string) (err error) {
	log, err := newLogger(cfg, logOut)
	if err != nil {
		return err
	}
	st, err := openBackend(ctx, cfg, useServe)
	if err != nil {
		return err
	}
	backend, kind := st.backend, st.kind
	defer func() {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing database: %w", cerr)
		}
	}()
	tr, stopTracing, err := startTracing(ctx, cfg.Metrics, log)
	if err != nil {
		return err
	}
	defer stopTracing()
	if tr != nil {
		backend = tr.Backend(backend)
	}
	m := metrics.New()
	backend = m.Backend(backend)
	logCapabilities(ctx, log, backend)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	addr := ln.Addr().String()
	base := cfg.BaseURL
	if base == "" {
		base = "http://" + addr
		if cfg.Transport.TLSCert != "" {
			base = "https://" + addr
		}
	}
	fcfg := fhir.Config{
		BaseURL:      base,
		Backend:      backend,
		Logger:       log,
		MaxBodyBytes: cfg.MaxBody,
	}
	cfg.Export.apply(&fcfg)
	// Clinical logic: MME on every MedicationRequest with its
	// DetectedIssues and $mme; remote-monitoring interpretation and alerts.
	clin, err := loadClinical(cfg.OpioidTable, log)
	if err != nil {
		ln.Close()
		return err
	}
	fcfg.Observers = append(fcfg.Observers, clin.observers...)
	fcfg.SerializeInProcess = cfg.Serialize == "process"
	fcfg.PatientOperations = append(fcfg.PatientOperations, opioidsafety.MMEOperation(clin.opioids))
	// Profiles: every write is checked against what it claims in meta.profile.
	if fcfg.Profiles, err = profile.New(); err != nil {
		ln.Close()
		return fmt.Errorf("loading profile definitions: %w", err)
	}
	fcfg.SkipCoreInvariants = !cfg.CoreInvariants
	instrument(m, tr, &fcfg)
	sec, err := prepareServer(ctx, cfg, base, backend, &fcfg, m, log)
	if err != nil {
		ln.Close()
		return err
	}
	// Runs after the HTTP server drained (deferred later, runs earlier
	// than the database close): audit events still queued get stored.
	defer func() {
		if cerr := sec.close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing audit writer: %w", cerr)
		}
	}()
	// Subscriptions observe last, so that they hear of what the other
	// observers derive (Flags, DetectedIssues).
	subs, err := cfg.Subs.service(backend, kind == "sqlite", fcfg.Authorizer, sec.selfAuth, log)
	if err != nil {
		ln.Close()
		return err
	}
	if subs != nil {
		fcfg.Observers = append(fcfg.Observers, subs)
		subs.Configure(&fcfg)
	}
	srv, err := fhir.New(fcfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer srv.Close()
	// Anodyne's and the vital-signs profiles are read and searched as
	// StructureDefinition resources.
	if err := srv.PublishProfiles(ctx); err != nil {
		ln.Close()
		return err
	}
	defer runSubscriptions(ctx, subs, srv, log)()
	defer runExpirySweep(ctx, backend, cfg.Export.LeaseTTL, sweepEvery, log)()
	// Custom SearchParameters are registered by a polling loop; it stops
	// (and is waited for) before the database closes.
	spCtx, spStop := context.WithCancel(ctx)
	spDone := make(chan struct{})
	go func() {
		defer close(spDone)
		if err := srv.RunSearchParameters(spCtx, cfg.SPPoll); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("search parameter loop stopped", "err", err)
		}
	}()
	defer func() {
		spStop()
		<-spDone
	}()
	sec.mount(srv.Echo())
	if err := mountCDS(ctx, cfg, base, srv, backend, clin.opioids, sec, log); err != nil {
		ln.Close()
		return err
	}
	if err := clinician.Mount(srv.Echo()); err != nil {
		ln.Close()
		return err
	}
	if cfg.preload != nil {
		if err := cfg.preload(ctx, srv, backend, base); err != nil {
			ln.Close()
			return err
		}
	}
	mountMetrics(srv.Echo(), m, cfg.Auth == "on", cfg.Sec.AdminToken)
	if cfg.Metrics.Listen != "" {
		stopMetrics, err := serveMetrics(ctx, cfg.Metrics.Listen, m, log)
		if err != nil {
			ln.Close()
			return err
		}
		defer stopMetrics()
	}
	var handler http.Handler = srv.Handler()
	if tr != nil {
		handler = tr.Handler(handler)
	}
	hs, err := newHTTPServer(cfg.Transport, handler, sec.limit, cfg.Auth == "on", log)
	if err != nil {
		ln.Close()
		return err
	}
	served := make(chan error, 1)
	go func() {
		if hs.TLSConfig != nil {
			served <- hs.ServeTLS(ln, "", "")
			return
		}
		served <- hs.Serve(ln)
	}()
	log.Info("anodyne listening", "addr", addr, "fhir_base", strings.TrimRight(base, "/")+"/fhir", "backend", kind)
	if ready != nil {
		ready <- addr
	}

	select {
	case err := <-served:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining in-flight requests", "timeout", cfg.ShutdownIn)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownIn)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("draining requests: %w", err)
	}
	log.Info("stopped")
	return nil
}
