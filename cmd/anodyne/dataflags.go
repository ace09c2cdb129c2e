package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/conformance/profile"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/subscription"
)

// dataFlags are the flags "anodyne import" and "anodyne export" share:
// the database to use directly, or a running server to go through.
type dataFlags struct {
	store   serveConfig
	server  string // FHIR base of a running server; empty: the database directly
	token   string
	baseURL string
	quiet   bool
	// opioidTable extends the embedded opioid table (import only).
	opioidTable string
}

// dataFlagHelp is the help of the shared flags, whose wording depends on
// which way the data moves.
type dataFlagHelp struct {
	server, token, baseURL, quiet string
}

func (d *dataFlags) register(fs *flag.FlagSet, help dataFlagHelp) {
	storeFlags(fs, &d.store)
	fs.StringVar(&d.server, "server", "", help.server)
	fs.StringVar(&d.token, "token", "", help.token)
	fs.StringVar(&d.baseURL, "base-url", "http://127.0.0.1:8080", help.baseURL)
	fs.BoolVar(&d.quiet, "quiet", false, help.quiet)
}

// parse applies ANODYNE_* variables, then the command line; without
// --token the token is ANODYNE_TOKEN.
func (d *dataFlags) parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := parseStoreCommand(fs, args, getenv); err != nil {
		return err
	}
	if d.token == "" {
		d.token = getenv("ANODYNE_TOKEN")
	}
	return nil
}

// remote is the client of --server. Its timeout bounds each request, not
// the whole run.
func (d *dataFlags) remote() remote {
	return remote{base: strings.TrimRight(d.server, "/"), token: d.token, hc: &http.Client{Timeout: 10 * time.Minute}}
}

// withDirectServer opens the database and a server on it (logging
// warnings only, to stderr), runs fn, and closes both.
func (d *dataFlags) withDirectServer(ctx context.Context, use storeUse, stderr io.Writer, fn func(*fhir.Server) error) error {
	st, err := openBackend(ctx, d.store, use)
	if err != nil {
		return err
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// An offline import derives what a served one does.
	clin, err := loadClinical(d.opioidTable, log)
	if err != nil {
		return err
	}
	profiles, err := profile.New()
	if err != nil {
		return fmt.Errorf("loading profile definitions: %w", err)
	}
	// Subscriptions match offline writes too; the events wait in the
	// outbox for a server to deliver them. Owners are judged by the same
	// decision point as when served with authorization on.
	reg, err := resources.Load(resources.WithBaseURL(strings.TrimRight(d.baseURL, "/")+"/fhir"), resources.WithLogger(log))
	if err != nil {
		return err
	}
	subs, err := subscription.New(subscription.Config{Backend: st.backend, Authorizer: auth.NewPolicy(reg), Logger: log})
	if err != nil {
		return err
	}
	srv, err := fhir.New(fhir.Config{
		BaseURL:   d.baseURL,
		Backend:   st.backend,
		Registry:  reg,
		Logger:    log,
		Observers: append(clin.observers, subs),
		Profiles:  profiles,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	subs.Attach(srv)
	if err := subs.Load(ctx); err != nil {
		return err
	}
	return fn(srv)
}
