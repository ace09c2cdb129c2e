package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/anodyne-fhir/anodyne/apps/clinician"
	"github.com/anodyne-fhir/anodyne/auth/smart"
	"github.com/anodyne-fhir/anodyne/demo"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Names of what "anodyne demo" registers.
const (
	demoUser      = "demo.clinician"
	demoEHRClient = "demo-ehr"
	demoEHRKey    = "demo-ehr-key.json"
)

// demoCommand is "anodyne demo [--patients N] [--days N] [serve flags]":
// it loads the generated data set into the store (only what is missing,
// so a second run adds nothing), registers the demo clinician (a fresh
// password each run, printed) and a demo EHR client, and runs the server.
func demoCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string, ready chan<- string) error {
	opts, rest, err := demoFlags(args)
	if err != nil {
		return err
	}
	cfg, err := parseServeAs("demo", "Loads the generated pain-clinic data set (--patients N, --days N) into the\nstore, registers a demo clinician and EHR client, and runs the server.", rest, stderr, getenv)
	if err != nil {
		return asUsage(err)
	}
	cfg.preload = func(ctx context.Context, srv *fhir.Server, be storage.Backend, base string) error {
		return demoPreload(ctx, cfg, opts, srv, be, base, stdout)
	}
	return serve(ctx, cfg, stderr, ready)
}

// demoFlags takes --patients and --days out of args; the rest are serve's.
func demoFlags(args []string) (demo.Options, []string, error) {
	var opts demo.Options
	var rest []string
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !strings.HasPrefix(args[i], "-") || (name != "patients" && name != "days") {
			rest = append(rest, args[i])
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return opts, nil, fmt.Errorf("--%s needs a value", name)
			}
			i++
			val = args[i]
		}
		n, err := strconv.Atoi(val)
		if err != nil || n < 1 || n > 1000 {
			return opts, nil, fmt.Errorf("--%s must be a number from 1 to 1000, not %q", name, val)
		}
		if name == "patients" {
			opts.Patients = n
		} else {
			opts.Days = n
		}
	}
	return opts, rest, nil
}

func demoPreload(ctx context.Context, cfg serveConfig, opts demo.Options, srv *fhir.Server, be storage.Backend, base string, stdout io.Writer) error {
	day, err := demo.EndDay(ctx, be.KV(), time.Now())
	if err != nil {
		return err
	}
	opts.End = day
	ds := demo.Generate(opts)
	fmt.Fprintf(stdout, "Loading the demo data set (%d resources)...\n", len(ds.Resources))
	rep, err := demo.Load(ctx, srv, be, ds, os.TempDir())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Demo data: %d patients, %d days ending %s: %d resources stored, %d already there.\n",
		len(ds.Patients), ds.Days, day.Format("2006-01-02"), rep.Stored, rep.Existing)
	root := strings.TrimRight(base, "/")
	if cfg.Auth == "off" {
		fmt.Fprintf(stdout, "Authorization is off: the clinician app needs a SMART server; open %s/fhir directly.\n", root)
		return nil
	}
	password, err := demoPassword()
	if err != nil {
		return err
	}
	patients := make([]string, len(ds.Patients))
	for i, p := range ds.Patients {
		patients[i] = p.ID
	}
	acct := smart.Account{Username: demoUser, FHIRUser: "Practitioner/" + ds.Clinician, Patients: patients, Name: "Dr. Alex Rivera"}
	if err := smart.NewAccountStore(be.KV()).Put(ctx, acct, password); err != nil {
		return fmt.Errorf("registering the demo clinician: %w", err)
	}
	keyFile, err := demoEHR(ctx, smart.NewClientStore(be.KV()), cfg.DataDir)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, `
Sign in as     %s
with password  %s   (a new one at every run of anodyne demo)
Worklist       %s%slaunch.html
EHR client     %s (backend services, may create launch contexts; its private key: %s)
`, demoUser, password, root, clinician.Path, demoEHRClient, keyFile)
	return nil
}

// demoPassword is 20 random base32 characters (100 bits).
func demoPassword() (string, error) {
	b := make([]byte, 13)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("drawing the demo password: %w", err)
	}
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))[:20], nil
}

// demoEHR registers the demo EHR as a backend-services client with an
// ES384 key it keeps in the data directory (created once, then reused).
func demoEHR(ctx context.Context, cs *smart.ClientStore, dataDir string) (string, error) {
	path := filepath.Join(dataDir, demoEHRKey)
	var priv jose.JSONWebKey
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := priv.UnmarshalJSON(raw); err != nil {
			return "", fmt.Errorf("reading %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
		k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			return "", fmt.Errorf("generating the demo EHR key: %w", err)
		}
		priv = jose.JSONWebKey{Key: k, KeyID: "demo-ehr-1", Algorithm: string(jose.ES384), Use: "sig"}
		out, err := priv.MarshalJSON()
		if err != nil {
			return "", fmt.Errorf("encoding the demo EHR key: %w", err)
		}
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return "", fmt.Errorf("creating %s: %w", dataDir, err)
		}
		if err := os.WriteFile(path, out, 0o600); err != nil {
			return "", fmt.Errorf("writing %s: %w", path, err)
		}
	default:
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{priv.Public()}})
	if err != nil {
		return "", fmt.Errorf("encoding the demo EHR JWKS: %w", err)
	}
	c := smart.Client{ID: demoEHRClient, Name: "Demo EHR", Type: smart.ClientAsymmetric, JWKS: jwks,
		Scopes: "system/Patient.rs system/Practitioner.rs", LaunchEHR: true}
	if _, err := smart.RegisterClient(ctx, cs, &c, ""); err != nil {
		return "", fmt.Errorf("registering the demo EHR client: %w", err)
	}
	return path, nil
}
