package main

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// proxyTrust resolves the client address of a request that arrives
// through a reverse proxy of --trusted-proxy. Only when the TCP peer is
// inside one of the trusted networks are X-Forwarded-For (preferred) and
// X-Real-IP believed; from anyone else they are ignored, so a client
// cannot choose the address it is audited, limited and locked out under.
// The X-Forwarded-For walk is Echo's: from the right, skipping trusted
// hops, the first untrusted address is the client (an address a client
// wrote further left is never taken); an entry that does not parse makes
// the whole header untrustworthy and the peer is used.
type proxyTrust struct {
	xff, realIP echo.IPExtractor
}

// parseTrustedProxies reads "CIDR[,CIDR]" (a bare IP is one address).
func parseTrustedProxies(v string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			ip := net.ParseIP(s)
			if ip == nil {
				return nil, fmt.Errorf("--trusted-proxy: %q is neither a CIDR nor an IP address", s)
			}
			bits := 128
			if ip.To4() != nil {
				ip, bits = ip.To4(), 32
			}
			out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
			continue
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("--trusted-proxy: %q: %w", s, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// newProxyTrust returns nil for no trusted proxy (the default).
func newProxyTrust(nets []*net.IPNet) *proxyTrust {
	if len(nets) == 0 {
		return nil
	}
	// Echo trusts loopback, link-local and private addresses unless told
	// otherwise: only the configured networks count here.
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range nets {
		opts = append(opts, echo.TrustIPRange(n))
	}
	return &proxyTrust{xff: echo.ExtractIPFromXFFHeader(opts...), realIP: echo.ExtractIPFromRealIPHeader(opts...)}
}

// clientIP is the client address of r.
func (p *proxyTrust) clientIP(r *http.Request) string {
	if len(r.Header.Values(echo.HeaderXForwardedFor)) > 0 {
		return p.xff(r)
	}
	return p.realIP(r)
}

// resolve returns r with RemoteAddr set to the client's address (port 0
// when it came from a header: the port the client used is not known), so
// that every later reader of the address (Echo's ExtractIPDirect in logs
// and AuditEvents, the per-address limiter, the sign-in throttle and
// lock-out) sees the client, not the proxy.
func (p *proxyTrust) resolve(r *http.Request) *http.Request {
	if p == nil {
		return r
	}
	ip := p.clientIP(r)
	if ip == "" {
		return r
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil && host == ip {
		return r
	}
	r2 := r.WithContext(r.Context())
	r2.RemoteAddr = net.JoinHostPort(ip, "0")
	return r2
}
