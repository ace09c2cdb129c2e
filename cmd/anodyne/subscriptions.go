package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/subscription"
)

// subscriptionConfig is the Subscriptions part of "anodyne serve".
type subscriptionConfig struct {
	Enabled       string
	AllowLoopback bool
	AllowNetworks string
	allow         []netip.Prefix
	Timeout       time.Duration
	BackoffMax    time.Duration
	Failures      int
	MaxPerClient  int
	Reload        time.Duration
}

func (sc *subscriptionConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&sc.Enabled, "subscriptions", "on", "R4 Subscriptions (rest-hook): on, or off (Subscription resources are then stored but nothing is matched or delivered)")
	fs.BoolVar(&sc.AllowLoopback, "subscription-allow-loopback", false, "development only: let Subscription endpoints be http:// or https:// to localhost and loopback addresses")
	fs.StringVar(&sc.AllowNetworks, "subscription-allow-networks", "", "CIDR[,CIDR] of private or link-local networks Subscription endpoints may reach (https only); by default deliveries go to public addresses only")
	fs.DurationVar(&sc.Timeout, "subscription-timeout", 10*time.Second, "longest time one notification may take, connection to answer")
	fs.DurationVar(&sc.BackoffMax, "subscription-backoff-max", 5*time.Minute, "longest wait between retries of a failing endpoint (the wait starts at 1s and doubles, with jitter)")
	fs.IntVar(&sc.Failures, "subscription-failures-before-error", 5, "consecutive failed notifications after which a Subscription's status becomes error (delivery keeps retrying)")
	fs.IntVar(&sc.MaxPerClient, "subscription-max-per-client", 100, "Subscriptions one client may have that are not off")
	fs.DurationVar(&sc.Reload, "subscription-reload", 10*time.Second, "how often all Subscriptions are re-read from the database; a change by another server process on it is noticed within about a second anyway")
}

func (sc *subscriptionConfig) validate() error {
	switch sc.Enabled {
	case "on", "off":
	default:
		return fmt.Errorf("--subscriptions must be on or off, not %q", sc.Enabled)
	}
	for name, d := range map[string]time.Duration{"--subscription-timeout": sc.Timeout, "--subscription-backoff-max": sc.BackoffMax, "--subscription-reload": sc.Reload} {
		if d <= 0 {
			return fmt.Errorf("%s must be positive", name)
		}
	}
	if sc.Failures <= 0 || sc.MaxPerClient <= 0 {
		return errors.New("--subscription-failures-before-error and --subscription-max-per-client must be positive")
	}
	sc.allow = nil
	for _, c := range strings.Split(sc.AllowNetworks, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return fmt.Errorf("--subscription-allow-networks: %w", err)
		}
		sc.allow = append(sc.allow, p.Masked())
	}
	return nil
}

// service builds the subscription observer (nil when off).
// exclusive: no other process uses the store (SQLite, behind the data
// directory lock).
func (sc *subscriptionConfig) service(b storage.Backend, exclusive bool, authz auth.Authorizer, authenticate func(context.Context, string) (context.Context, error), log *slog.Logger) (*subscription.Service, error) {
	if sc.Enabled != "on" {
		return nil, nil
	}
	if sc.AllowLoopback {
		log.Warn("subscription endpoints may be loopback addresses (--subscription-allow-loopback): development only")
	}
	return subscription.New(subscription.Config{
		Backend: b, Authorizer: authz, Logger: log,
		AllowLoopback: sc.AllowLoopback, Allow: sc.allow,
		Timeout: sc.Timeout, BackoffMax: sc.BackoffMax, FailuresBeforeError: sc.Failures,
		MaxPerClient: sc.MaxPerClient, Reload: sc.Reload, Exclusive: exclusive, Authenticate: authenticate,
	})
}

// runSubscriptions attaches svc to srv and delivers until the returned
// stop is called (it waits for the loop, before the database closes).
func runSubscriptions(ctx context.Context, svc *subscription.Service, srv *fhir.Server, log *slog.Logger) (stop func()) {
	if svc == nil {
		return func() {}
	}
	svc.Attach(srv)
	srv.Echo().GET(subscription.WebsocketPath, echo.WrapHandler(http.HandlerFunc(svc.ServeWebsocket)))
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := svc.Run(ctx); err != nil {
			log.Error("subscription delivery stopped", "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
