package main

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth"
)

// transportConfig is the HTTP transport part of "anodyne serve": timeouts,
// header size, the per-client concurrency bound and TLS.
type transportConfig struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	ClientRequests    int
	TLSCert           string
	TLSKey            string
	// TrustedProxy is --trusted-proxy as given; Proxies its parsed networks.
	TrustedProxy string
	Proxies      []*net.IPNet
}

func (tc *transportConfig) register(fs *flag.FlagSet) {
	fs.DurationVar(&tc.ReadHeaderTimeout, "read-header-timeout", 10*time.Second, "longest time a client may take to send the request headers (slowloris bound)")
	fs.DurationVar(&tc.ReadTimeout, "read-timeout", time.Minute, "longest time a client may take to send a whole request, headers and body (slow-body bound); handlers may run longer once the body is in")
	fs.DurationVar(&tc.WriteTimeout, "write-timeout", 5*time.Minute, "longest time from the end of the request headers to the end of the response; Bulk export file downloads instead may stall no longer than this between two writes")
	fs.DurationVar(&tc.IdleTimeout, "idle-timeout", 90*time.Second, "how long an idle keep-alive connection stays open")
	fs.IntVar(&tc.MaxHeaderBytes, "max-header-bytes", 64<<10, "largest accepted request header block in bytes (431 beyond)")
	fs.IntVar(&tc.ClientRequests, "max-client-requests", 32, "concurrent requests allowed per client (per token client and user when authenticated, else per source address, IPv6 per /64); 429 with Retry-After beyond")
	fs.StringVar(&tc.TLSCert, "tls-cert", "", "PEM certificate chain: serve HTTPS (TLS 1.2 or newer) instead of HTTP; the files are re-read when they change, no restart needed")
	fs.StringVar(&tc.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&tc.TrustedProxy, "trusted-proxy", "", "CIDR[,CIDR] of reverse proxies whose X-Forwarded-For / X-Real-IP name the client address (for audit, the per-address bound, sign-in throttling and lock-outs); from any other peer the headers are ignored. Default: none, the TCP peer is the client")
}

func (tc *transportConfig) validate() error {
	for name, d := range map[string]time.Duration{"--read-header-timeout": tc.ReadHeaderTimeout, "--read-timeout": tc.ReadTimeout, "--write-timeout": tc.WriteTimeout, "--idle-timeout": tc.IdleTimeout} {
		if d <= 0 {
			return fmt.Errorf("%s must be positive", name)
		}
	}
	if tc.ReadHeaderTimeout > tc.ReadTimeout {
		return errors.New("--read-header-timeout must not exceed --read-timeout")
	}
	if tc.MaxHeaderBytes < 4096 {
		return errors.New("--max-header-bytes must be at least 4096")
	}
	if tc.ClientRequests <= 0 {
		return errors.New("--max-client-requests must be positive")
	}
	if (tc.TLSCert == "") != (tc.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	nets, err := parseTrustedProxies(tc.TrustedProxy)
	if err != nil {
		return err
	}
	tc.Proxies = nets
	return nil
}

// retryAfter is what a throttled client is told to wait: the bound is on
// requests in flight, which typically finish within a second.
const retryAfter = "1"

// clientLimiter bounds the requests in flight per client key. Entries
// exist only while a request of that key runs, so memory is bounded by
// the number of requests in flight.
type clientLimiter struct {
	max      int
	log      *slog.Logger
	mu       sync.Mutex
	inFlight map[string]int
}

func newClientLimiter(max int, log *slog.Logger) *clientLimiter {
	return &clientLimiter{max: max, log: log, inFlight: map[string]int{}}
}

func (l *clientLimiter) acquire(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight[key] >= l.max {
		return false
	}
	l.inFlight[key]++
	return true
}

func (l *clientLimiter) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight[key]--; l.inFlight[key] <= 0 {
		delete(l.inFlight, key)
	}
}

// refuse answers 429 with Retry-After and an OperationOutcome.
func (l *clientLimiter) refuse(w http.ResponseWriter, r *http.Request, key string) {
	l.log.InfoContext(r.Context(), "too many concurrent requests", "client", key, "method", r.Method, "path", r.URL.Path, "limit", l.max)
	body, _ := json.Marshal(map[string]any{
		"resourceType": "OperationOutcome",
		"issue": []any{map[string]any{
			"severity":    "error",
			"code":        "throttled",
			"diagnostics": fmt.Sprintf("more than %d concurrent requests from this client; retry after %s s", l.max, retryAfter),
		}},
	})
	w.Header().Set("Retry-After", retryAfter)
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(http.StatusTooManyRequests)
	_, _ = w.Write(body)
}

// addressKey is the limiter key of an unauthenticated request: its TCP
// source address (never a forwarding header, which the client chooses),
// with IPv6 grouped per /64, the block one subscriber usually holds.
func addressKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return "addr:" + host
	}
	if ip.To4() == nil {
		ip = ip.Mask(net.CIDRMask(64, 128))
	}
	return "addr:" + ip.String()
}

// principalKey is the limiter key of an authenticated request: the app
// (client id at its issuer) and the user it acts for, so that the users
// of one patient-facing app do not share a single bound.
func principalKey(p *auth.Principal) string {
	return "client:" + p.Issuer + "|" + p.ClientID + "|" + p.Subject
}

// authenticatedLater reports whether the auth middleware will verify this
// request's token, so that the principal limiter (after it) bounds it.
func authenticatedLater(authOn bool, r *http.Request) bool {
	if !authOn || !strings.HasPrefix(r.URL.Path, "/fhir/") || r.URL.Path == "/fhir/metadata" || auth.DefaultPublic(r) {
		return false
	}
	_, ok := auth.BearerToken(r)
	return ok
}

// principalLimit bounds authenticated requests per principal; it runs
// right after the auth middleware.
func (l *clientLimiter) principalLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		p := auth.FromContext(r.Context())
		if p == nil {
			// A public route: already bounded by address in transportHandler.
			return next(c)
		}
		key := principalKey(p)
		if !l.acquire(key) {
			l.refuse(c.Response(), r, key)
			return nil
		}
		defer l.release(key)
		return next(c)
	}
}

// transportHandler wraps the router: it bounds unauthenticated requests
// per source address and gives export file downloads a progress-based
// write deadline, which http.Server cannot express. (ReadTimeout needs no
// lifting: in Go 1.26 its expiry after the body is read does not cancel
// the handler, as TestTransportDeadlines checks.)
type transportHandler struct {
	next    http.Handler
	limit   *clientLimiter
	authOn  bool
	writeTO time.Duration
	proxies *proxyTrust // nil: no trusted proxy
}

func (h *transportHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r = h.proxies.resolve(r)
	if strings.HasPrefix(r.URL.Path, "/fhir/$export-file/") {
		// Export files can be gigabytes: the download may last as long as
		// it keeps moving.
		w = &progressWriter{ResponseWriter: w, rc: http.NewResponseController(w), stall: h.writeTO}
	}
	if authenticatedLater(h.authOn, r) {
		h.next.ServeHTTP(w, r)
		return
	}
	key := addressKey(r.RemoteAddr)
	if !h.limit.acquire(key) {
		h.limit.refuse(w, r, key)
		return
	}
	defer h.limit.release(key)
	h.next.ServeHTTP(w, r)
}

// progressWriter moves the write deadline forward before every write.
type progressWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
}

func (p *progressWriter) Write(b []byte) (int, error) {
	_ = p.rc.SetWriteDeadline(time.Now().Add(p.stall))
	return p.ResponseWriter.Write(b)
}

func (p *progressWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

// certReloader serves the certificate of --tls-cert/--tls-key and loads
// it again when either file's size or modification time changes (checked
// with a stat on each handshake, cheap next to the handshake itself). A
// pair that fails to load, such as a certificate written before its key,
// keeps the previous one in service and is retried on the next handshake.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	mu                sync.Mutex
	cert              *tls.Certificate
	seen              [2]fileStamp
}

type fileStamp struct {
	size int64
	mod  time.Time
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	c := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if _, err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

func stamp(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, fmt.Errorf("TLS file: %w", err)
	}
	return fileStamp{size: st.Size(), mod: st.ModTime()}, nil
}

// reload loads the pair if it changed since the last successful load.
func (c *certReloader) reload() (bool, error) {
	cs, err := stamp(c.certFile)
	if err != nil {
		return false, err
	}
	ks, err := stamp(c.keyFile)
	if err != nil {
		return false, err
	}
	now := [2]fileStamp{cs, ks}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert != nil && now == c.seen {
		return false, nil
	}
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return false, fmt.Errorf("loading TLS certificate %s and key %s: %w", c.certFile, c.keyFile, err)
	}
	c.cert, c.seen = &pair, now
	return true, nil
}

func (c *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	changed, err := c.reload()
	if err != nil {
		c.log.Warn("TLS certificate not reloaded; serving the previous one", "err", err)
	} else if changed {
		c.log.Info("TLS certificate reloaded", "cert", c.certFile)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert, nil
}

// newHTTPServer builds the http.Server of "anodyne serve" around handler.
func newHTTPServer(tc transportConfig, handler http.Handler, limit *clientLimiter, authOn bool, log *slog.Logger) (*http.Server, error) {
	hs := &http.Server{
		Handler:           &transportHandler{next: handler, limit: limit, authOn: authOn, writeTO: tc.WriteTimeout, proxies: newProxyTrust(tc.Proxies)},
		ReadHeaderTimeout: tc.ReadHeaderTimeout,
		ReadTimeout:       tc.ReadTimeout,
		WriteTimeout:      tc.WriteTimeout,
		IdleTimeout:       tc.IdleTimeout,
		MaxHeaderBytes:    tc.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if tc.TLSCert != "" {
		cr, err := newCertReloader(tc.TLSCert, tc.TLSKey, log)
		if err != nil {
			return nil, err
		}
		hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: cr.getCertificate}
	}
	return hs, nil
}
