package subscription

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// endpoints decides where deliveries may go.
type endpoints struct {
	allowLoopback bool
	allow         []netip.Prefix
}

var (
	cgnat       = netip.MustParsePrefix("100.64.0.0/10")
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
)

// checkURL validates channel.endpoint at write time.
func (p endpoints) checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("channel.endpoint %q is not an absolute URL", raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("channel.endpoint must not carry credentials in the URL; use channel.header")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !p.allowLoopback {
			return nil, fmt.Errorf("channel.endpoint must be https")
		}
	default:
		return nil, fmt.Errorf("channel.endpoint must be https, not %q", u.Scheme)
	}
	ip, err := netip.ParseAddr(u.Hostname())
	if err == nil {
		if err := p.checkIP(ip, u.Scheme == "http"); err != nil {
			return nil, fmt.Errorf("channel.endpoint: %w", err)
		}
	} else if u.Scheme == "http" && !strings.EqualFold(u.Hostname(), "localhost") {
		return nil, fmt.Errorf("channel.endpoint: http is allowed to loopback only (localhost or a loopback address), not %s", u.Hostname())
	}
	return u, nil
}

// checkIP decides one address a connection is about to be made to.
func (p endpoints) checkIP(ip netip.Addr, plain bool) error {
	ip = ip.Unmap()
	for _, a := range p.allow {
		if a.Contains(ip) {
			return nil
		}
	}
	if ip.IsLoopback() {
		if p.allowLoopback {
			return nil
		}
		return fmt.Errorf("address %s is loopback", ip)
	}
	if plain {
		return fmt.Errorf("http is allowed to loopback only, not %s", ip)
	}
	switch {
	case ip.IsPrivate(), ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast(),
		ip.IsMulticast(), ip.IsUnspecified(), cgnat.Contains(ip), thisNetwork.Contains(ip):
		return fmt.Errorf("address %s is private, link-local, multicast or unspecified", ip)
	}
	return nil
}

// errRefusedAddress marks a dial the policy refused (not worth retrying
// fast, but reported like any failure).
var errRefusedAddress = errors.New("endpoint address refused")

// client builds the HTTP client of deliveries: no proxy, no redirects,
// every dialled address checked after name resolution.
func (p endpoints) client(timeout time.Duration) *http.Client {
	dial := func(plain bool) func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := &net.Dialer{Timeout: timeout, Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", errRefusedAddress, address)
			}
			if err := p.checkIP(ap.Addr(), plain); err != nil {
				return fmt.Errorf("%w: %v", errRefusedAddress, err)
			}
			return nil
		}}
		return d.DialContext
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dial(false),
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	plainTr := tr.Clone()
	plainTr.DialContext = dial(true)
	return &http.Client{
		Timeout:   timeout,
		Transport: schemeTransport{https: tr, http: plainTr},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// schemeTransport sends http requests through the transport whose dialer
// allows loopback only.
type schemeTransport struct{ https, http http.RoundTripper }

func (t schemeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "http" {
		return t.http.RoundTrip(r)
	}
	return t.https.RoundTrip(r)
}
