package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/anodyne-fhir/anodyne/clinical/cdshooks"
	"github.com/anodyne-fhir/anodyne/clinical/opioid"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// cdsConfig is the CDS Hooks service's part of serve.
type cdsConfig struct {
	Clients    cdsClients
	ClientAuth string
}

func (c *cdsConfig) register(fs *flag.FlagSet) {
	fs.Var(&c.Clients, "cds-client", "CDS Hooks client (an EHR) allowed to call /cds-services, checked against its JWKS (repeatable; several may be separated by ';'):\n"+
		"issuer=ISS,jwks=URL or issuer=ISS,jwks-file=PATH, optionally with fhir-server=URL (repeatable key): the only remote fhirServers it may have the service fetch from")
	fs.StringVar(&c.ClientAuth, "cds-client-auth", "on", "CDS Hooks client authentication: on (every service call needs a JWT signed by a --cds-client) or off (development only: anyone may call)")
}

func (c *cdsConfig) validate() error {
	switch c.ClientAuth {
	case "on", "off":
	default:
		return fmt.Errorf("--cds-client-auth must be on or off, not %q", c.ClientAuth)
	}
	if c.ClientAuth == "off" && len(c.Clients) > 0 {
		return fmt.Errorf("--cds-client needs --cds-client-auth=on")
	}
	return nil
}

// cdsClients is the repeatable --cds-client flag.
type cdsClients []cdshooks.TrustedClient

func (c *cdsClients) String() string {
	if c == nil {
		return ""
	}
	names := make([]string, len(*c))
	for i, x := range *c {
		names[i] = x.Issuer
	}
	return strings.Join(names, ";")
}

func (c *cdsClients) Set(v string) error {
	for _, one := range strings.Split(v, ";") {
		if strings.TrimSpace(one) == "" {
			continue
		}
		var tc cdshooks.TrustedClient
		for _, kv := range strings.Split(one, ",") {
			k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
			if !ok || val == "" {
				return fmt.Errorf("CDS client %q: %q is not key=value", one, kv)
			}
			switch k {
			case "issuer":
				tc.Issuer = val
			case "jwks":
				if !strings.HasPrefix(val, "https://") && !strings.HasPrefix(val, "http://") {
					return fmt.Errorf("CDS client %q: jwks must be an http(s) URL (use jwks-file for a file)", one)
				}
				tc.JWKSURL = val
			case "jwks-file":
				tc.JWKSFile = val
			case "fhir-server":
				if !strings.HasPrefix(val, "https://") && !strings.HasPrefix(val, "http://") {
					return fmt.Errorf("CDS client %q: fhir-server must be an http(s) URL", one)
				}
				tc.FHIRServers = append(tc.FHIRServers, val)
			default:
				return fmt.Errorf("CDS client %q: unknown key %q (issuer, jwks, jwks-file, fhir-server)", one, k)
			}
		}
		if tc.Issuer == "" || (tc.JWKSURL == "") == (tc.JWKSFile == "") {
			return fmt.Errorf("CDS client %q needs issuer and exactly one of jwks or jwks-file", one)
		}
		*c = append(*c, tc)
	}
	return nil
}

// mountCDS adds the CDS Hooks service to the server's router. Reads of
// this server's own data go through its FHIR API's authorization: the
// hook's fhirAuthorization token is verified as a FHIR request's would be.
func mountCDS(ctx context.Context, cfg serveConfig, base string, srv *fhir.Server, backend storage.Backend, tab *opioid.Table, sec *security, log *slog.Logger) error {
	svc, err := cdshooks.New(ctx, cdshooks.Config{
		BaseURL:       base,
		FHIRBase:      strings.TrimRight(base, "/") + "/fhir",
		FHIR:          srv,
		SelfAuth:      sec.selfAuth,
		Table:         tab,
		Clients:       cfg.CDS.Clients,
		ClientAuthOff: cfg.CDS.ClientAuth == "off",
		Replay:        backend.KV(),
		Audit:         sec.audit,
		MaxBody:       cfg.MaxBody,
		Logger:        log,
	})
	if err != nil {
		return fmt.Errorf("CDS Hooks service: %w", err)
	}
	svc.Register(srv.Echo())
	return nil
}
