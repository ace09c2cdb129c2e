package subscription

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Config tunes a Service. Zero values take the defaults in parentheses.
type Config struct {
	// Backend is the store the server writes to. Required.
	Backend storage.Backend
	// Authorizer is the server's decision point (auth.Policy); nil means
	// authorization is off and every Subscription hears of everything.
	Authorizer auth.Authorizer
	Logger     *slog.Logger
	// AllowLoopback lets endpoints be http://127.0.0.1 and other loopback
	// addresses (development and tests only).
	AllowLoopback bool
	// Allow lists address ranges deliveries may reach although they are
	// private or link-local (a receiver on the hospital network).
	Allow []netip.Prefix
	// Timeout bounds one delivery, connection to response (10s).
	Timeout time.Duration
	// MaxResponse is how much of a receiver's answer is read (64 KiB).
	MaxResponse int64
	// BackoffMin and BackoffMax bound the wait after a failed delivery; it
	// doubles with each consecutive failure, with jitter (1s, 5m).
	BackoffMin, BackoffMax time.Duration
	// FailuresBeforeError is the run of failed deliveries after which the
	// Subscription's status becomes error (5).
	FailuresBeforeError int
	// Reload is how often Subscriptions are re-read from the store, so
	// that those written by other processes take effect (10s).
	Reload time.Duration
	// Check is how often the store is asked whether any Subscription
	// changed (one history read of the newest version), reloading at once
	// when one did (1s).
	Check time.Duration
	// Poll is how often the outbox is scanned when nothing was written in
	// this process (1s).
	Poll time.Duration
	// LeaseTTL is how long a process owns a Subscription's delivery
	// before renewing its lease (at least 3 × (Timeout + 2s)).
	LeaseTTL time.Duration
	// Exclusive says no other process uses the store (the SQLite data
	// directory lock): leases a killed predecessor left are cleared at
	// Run instead of waited out.
	Exclusive bool
	// MaxPerClient caps the Subscriptions one client may have that are not
	// off (100).
	MaxPerClient int
	// Authenticate verifies a bearer token as the FHIR API does and returns
	// ctx with its Principal: the R4 websocket protocol ("bind ID") is
	// authenticated by the token of the upgrade request. Nil means auth is
	// off (no tokens): any client may bind any R4 websocket Subscription.
	Authenticate func(ctx context.Context, token string) (context.Context, error)
}

func (c *Config) defaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	set(&c.Timeout, 10*time.Second)
	set(&c.BackoffMin, time.Second)
	set(&c.BackoffMax, 5*time.Minute)
	set(&c.Reload, 10*time.Second)
	set(&c.Poll, time.Second)
	set(&c.Check, time.Second)
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if min := 3 * (c.Timeout + 2*time.Second); c.LeaseTTL < min {
		c.LeaseTTL = min
	}
	if c.MaxResponse <= 0 {
		c.MaxResponse = 64 << 10
	}
	if c.FailuresBeforeError <= 0 {
		c.FailuresBeforeError = 5
	}
	if c.MaxPerClient <= 0 {
		c.MaxPerClient = 100
	}
}

// Service matches writes against Subscriptions (as a fhir.CommitObserver)
// and delivers the events (Run).
type Service struct {
	cfg    Config
	log    *slog.Logger
	outbox storage.Outbox
	policy endpoints
	holder string // this process's lease holder id
	srv    atomic.Pointer[fhir.Server]
	reg    *registry
	topics map[string]*topic
	wake   chan struct{}

	mu       sync.Mutex
	failures map[string]int           // stream -> consecutive failed deliveries
	waiters  map[string]chan struct{} // stream -> its lingering deliverer
	conns    map[*wsConn]context.CancelFunc

	sockets *sockets
}

// New returns a Service over cfg.Backend, which must implement
// storage.Outbox (both shipped backends do).
func New(cfg Config) (*Service, error) {
	if cfg.Backend == nil {
		return nil, errors.New("subscription: Config.Backend is required")
	}
	ob, ok := storage.As[storage.Outbox](cfg.Backend)
	if !ok {
		return nil, fmt.Errorf("subscription: backend %T has no outbox", cfg.Backend)
	}
	cfg.defaults()
	topics, err := loadTopics()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	s := &Service{
		cfg: cfg, log: cfg.Logger, outbox: ob,
		policy:   endpoints{allowLoopback: cfg.AllowLoopback, allow: cfg.Allow},
		holder:   hex.EncodeToString(b),
		topics:   topics,
		wake:     make(chan struct{}, 1),
		failures: map[string]int{},
		waiters:  map[string]chan struct{}{},
		conns:    map[*wsConn]context.CancelFunc{},
		sockets:  newSockets(),
	}
	s.reg = newRegistry(s)
	return s, nil
}

// Attach gives the Service the server it observes: criteria are compiled
// by its search engine, payloads leave through its output filter and
// status changes go through its commit path. Call it after fhir.New and
// before the server takes requests.
func (s *Service) Attach(srv *fhir.Server) { s.srv.Store(srv) }

func (s *Service) server() (*fhir.Server, error) {
	srv := s.srv.Load()
	if srv == nil {
		return nil, errors.New("subscription: service used before Attach")
	}
	return srv, nil
}

// ObserveCommit implements fhir.CommitObserver: it checks and completes
// Subscription writes, then enqueues an event for every active
// Subscription whose criteria and owner's access match a written version.
func (s *Service) ObserveCommit(ctx context.Context, cs *fhir.CommitSet) error {
	for i := 0; i < cs.Len(); i++ {
		switch cs.Write(i).Type {
		case "Subscription":
			if err := s.observeSubscription(ctx, cs, i); err != nil {
				return err
			}
		case "Basic":
			if err := s.checkTopicWrite(ctx, cs.Write(i)); err != nil {
				return err
			}
		}
	}
	act := s.reg.indexes()
	if len(act) == 0 {
		return nil
	}
	enqueued := false
	for i := 0; i < cs.Len(); i++ {
		w := cs.Write(i)
		if w.Deleted {
			continue
		}
		var decoded map[string]any
		res := func() map[string]any { // decoded once, for topic conditions only
			if decoded == nil {
				var err error
				if decoded, err = decode(w.JSON); err != nil {
					s.log.Error("subscription: decoding a written resource", "resource", w.Type+"/"+w.ID, "err", err)
				}
			}
			return decoded
		}
		for _, a := range act[w.Type].candidates(w.Index) {
			if !a.matches(s.log, w, res) {
				continue
			}
			st := streamOf(a.sub.ID)
			cs.Enqueue(i, storage.Event{Stream: st, ID: newEventID(), Data: encodeEvent(w.Type, w.ID, w.VersionID)})
			s.signal(st)
			enqueued = true
		}
	}
	if enqueued {
		s.poke()
	}
	return nil
}

// poke wakes the delivery loop (the event becomes readable once the
// Commit returns; the loop looks again shortly after).
func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// ownedKey marks the context of the Service's own status writes, which
// keep the owner and skip the client rules.
type ownedKey struct{}

func ownedWrite(ctx context.Context) bool {
	v, _ := ctx.Value(ownedKey{}).(bool)
	return v
}

// Load reads the Subscriptions from the store so that writes match them.
// Run does it; a process that only writes (an offline import) calls it
// after Attach, and its events wait in the outbox for a server's Run.
func (s *Service) Load(ctx context.Context) error { return s.reg.load(ctx) }
