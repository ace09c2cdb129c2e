package subscription_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/fhir/fhirtest"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
	"github.com/anodyne-fhir/anodyne/storage/mongo"
	"github.com/anodyne-fhir/anodyne/subscription"
)

var env *fhirtest.Env

func TestMain(m *testing.M) {
	var err error
	if env, err = fhirtest.NewEnv("subs"); err != nil {
		panic(err)
	}
	code := m.Run()
	if err := env.Close(); err != nil {
		slog.Error("stopping FerretDB", "err", err)
	}
	os.Exit(code)
}

type backend = fhirtest.Backend

// openMongo opens database db (one per test unless shared on purpose).
func openMongo(t testing.TB, db string) storage.Backend {
	srv := env.Mongo(t)
	_, reg := env.Parts(t)
	b, err := mongo.Open(context.Background(), srv.URI, db, mongo.WithPartitioning(reg.Partitioning()))
	if err != nil {
		t.Fatalf("open mongo: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func backends() []backend { return env.Backends() }

func parts(t testing.TB) (*conformance.Validator, *resources.Registry) { return env.Parts(t) }

// asPrincipal stands in for token verification (tested in package auth
// and end to end in cmd/anodyne): the X-Test-As header names one of the
// given Principals, and the real decision point (auth.Policy) judges it.
// A request naming none has no Principal and is denied.
func asPrincipal(ps map[string]*auth.Principal) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			if p := ps[r.Header.Get("X-Test-As")]; p != nil {
				c.SetRequest(r.WithContext(auth.WithPrincipal(r.Context(), p)))
			}
			return next(c)
		}
	}
}

type server struct {
	*fhirtest.Server
	svc *subscription.Service
}

// fast are delivery settings for tests: quick polls and retries.
func fast(cfg *subscription.Config) {
	cfg.AllowLoopback = true
	cfg.Poll = 50 * time.Millisecond
	cfg.Reload = 500 * time.Millisecond
	cfg.Check = 100 * time.Millisecond
	cfg.BackoffMin = 20 * time.Millisecond
	cfg.BackoffMax = 200 * time.Millisecond
	cfg.Timeout = 2 * time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
}

// start runs the real FHIR server on b with the subscription service as
// its last observer, and the service's delivery loop until cleanup.
func start(t testing.TB, b storage.Backend, ps map[string]*auth.Principal, mod func(*subscription.Config)) *server {
	t.Helper()
	return startObserved(t, b, ps, mod)
}

// startObserved is start with other observers (clinical rules) placed
// before the subscription service, which hears of what they derive.
func startObserved(t testing.TB, b storage.Backend, ps map[string]*auth.Principal, mod func(*subscription.Config), observers ...fhir.CommitObserver) *server {
	t.Helper()
	_, reg := parts(t)
	sc := subscription.Config{Backend: b}
	if ps != nil {
		sc.Authorizer = auth.NewPolicy(reg)
	}
	fast(&sc)
	if mod != nil {
		mod(&sc)
	}
	svc, err := subscription.New(sc)
	if err != nil {
		t.Fatal(err)
	}
	fs := env.Start(t, b, func(cfg *fhir.Config) {
		cfg.Observers = append(append([]fhir.CommitObserver{}, observers...), svc)
		if ps != nil {
			cfg.Authorizer = sc.Authorizer
			cfg.Middleware = asPrincipal(ps)
		}
		svc.Configure(cfg)
	})
	svc.Attach(fs.FHIR)
	fs.FHIR.Echo().GET(subscription.WebsocketPath, echo.WrapHandler(http.HandlerFunc(svc.ServeWebsocket)))
	t.Cleanup(runService(t, svc))
	return &server{Server: fs, svc: svc}
}

// runService runs svc's delivery loop until the returned stop is called.
// Register stop as a cleanup after the server's (cleanups run
// last-in first-out: the loop stops before the server closes).
func runService(t testing.TB, svc *subscription.Service) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := svc.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// do sends a request under the FHIR base ("/Patient/1") as principal as.
func (s *server) do(t testing.TB, as, method, path, body string, hdr ...string) fhirtest.Response {
	t.Helper()
	return s.Do(t, method, path, body, append([]string{"X-Test-As: " + as}, hdr...)...)
}

func get(v any, path ...any) any { return fhirtest.Get(v, path...) }

// delivery is one request a receiver got.
type delivery struct {
	Method, Path string
	Header       http.Header
	Body         []byte
}

// receiver is a real HTTP endpoint recording what it is sent; fail, when
// set, decides the status of each request (0: 200).
type receiver struct {
	ts   *httptest.Server
	mu   sync.Mutex
	got  []delivery
	fail func(n int, d delivery) int
	tick chan struct{}
}

func newReceiver(t testing.TB) *receiver {
	r := &receiver{tick: make(chan struct{}, 1000)}
	r.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		d := delivery{Method: req.Method, Path: req.URL.Path, Header: req.Header.Clone(), Body: body}
		r.mu.Lock()
		status := http.StatusOK
		if r.fail != nil {
			if s := r.fail(len(r.got), d); s != 0 {
				status = s
			}
		}
		if status < 300 {
			r.got = append(r.got, d)
		}
		r.mu.Unlock()
		w.WriteHeader(status)
		select {
		case r.tick <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(r.ts.Close)
	return r
}

// under returns the accepted deliveries whose path starts with prefix.
func (r *receiver) under(prefix string) []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []delivery
	for _, d := range r.got {
		if strings.HasPrefix(d.Path, prefix) {
			out = append(out, d)
		}
	}
	return out
}

// wait returns the deliveries under prefix once there are n, then waits
// settle longer to catch any extra one; it fails after timeout.
func (r *receiver) wait(t testing.TB, prefix string, n int, timeout, settle time.Duration) []delivery {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for len(r.under(prefix)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d deliveries after %v, want %d: %v", prefix, len(r.under(prefix)), timeout, n, paths(r.under(prefix)))
		}
		select {
		case <-r.tick:
		case <-time.After(50 * time.Millisecond):
		}
	}
	time.Sleep(settle)
	return r.under(prefix)
}

func paths(ds []delivery) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Method+" "+d.Path)
	}
	return out
}
