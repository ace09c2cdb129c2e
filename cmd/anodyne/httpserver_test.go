package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hostOf strips the scheme startServe put in front of the bound address.
func hostOf(base string) string { return strings.TrimPrefix(base, "http://") }

// dribble opens a raw connection, sends head, then one byte of more every
// 50 ms until more is sent or the server closes the connection. It
// returns whether the server closed it first, and what it answered.
func dribble(t *testing.T, addr, head, more string) (closedEarly bool, answer string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	read := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(conn) // ends when the server closes
		read <- string(b)
	}()
	for i := 0; i < len(more); i++ {
		select {
		case ans := <-read:
			return true, ans
		case <-time.After(50 * time.Millisecond):
		}
		if _, err := conn.Write([]byte{more[i]}); err != nil {
			return true, <-read
		}
	}
	return false, ""
}

// TestServeSlowClients checks that a slowloris connection (headers one
// byte at a time) and a slow body are cut off by the header and read
// timeouts while a normal client is served meanwhile.
func TestServeSlowClients(t *testing.T) {
	srv := startServe(t, "--auth=off", "--data-dir", t.TempDir(), "--read-header-timeout", "300ms", "--read-timeout", "1s")
	addr := hostOf(srv.base)
	type result struct {
		early  bool
		answer string
	}
	// Each dribble would take 400 x 50 ms = 20 s if it were allowed to.
	slowHeaders := make(chan result, 1)
	go func() {
		early, ans := dribble(t, addr, "GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n", strings.Repeat("X-Slow: 1\r\n", 40))
		slowHeaders <- result{early, ans}
	}()
	slowBody := make(chan result, 1)
	go func() {
		early, ans := dribble(t, addr, "POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\nContent-Length: 400\r\n\r\n", strings.Repeat(" ", 400))
		slowBody <- result{early, ans}
	}()
	// A normal client reads fine while both are connected.
	if code, out := fhirCall(t, "PUT", srv.base+"/fhir/Patient/p1", `{"resourceType":"Patient","id":"p1"}`); code != http.StatusCreated {
		t.Fatalf("PUT while slow clients are connected: %d %v", code, out)
	}
	if code, out := fhirCall(t, "GET", srv.base+"/fhir/Patient/p1", ""); code != http.StatusOK {
		t.Fatalf("GET while slow clients are connected: %d %v", code, out)
	}
	if r := <-slowHeaders; !r.early || strings.HasPrefix(r.answer, "HTTP/1.1 200") {
		t.Errorf("slowloris headers: closed early %v, answer %q; want closed without a FHIR answer", r.early, r.answer)
	}
	if r := <-slowBody; !r.early || strings.HasPrefix(r.answer, "HTTP/1.1 201") {
		t.Errorf("slow body: closed early %v, answer %q; want closed and nothing created", r.early, r.answer)
	}
	// The slow body never reached storage.
	code, bundle := fhirCall(t, "GET", srv.base+"/fhir/Patient?_summary=count", "")
	if code != http.StatusOK || fmt.Sprint(bundle["total"]) != "1" {
		t.Errorf("Patients after the slow body: %d %v, want total 1", code, bundle)
	}
}

// holdRequest starts a request whose body never completes, so that it
// stays in flight (inside the handler) until the returned func closes it.
// answered is closed if the server answers it anyway (it was refused).
func holdRequest(t *testing.T, addr, path, token string) (release func(), answered <-chan struct{}) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ct := "application/fhir+json"
	if strings.HasPrefix(path, "/auth/") {
		ct = "application/x-www-form-urlencoded"
	}
	head := "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: " + ct + "\r\nContent-Length: 1000\r\n"
	if token != "" {
		head += "Authorization: Bearer " + token + "\r\n"
	}
	if _, err := io.WriteString(conn, head+"\r\n{"); err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{})
	go func() {
		if n, _ := conn.Read(make([]byte, 1)); n > 0 {
			close(ch)
		}
	}()
	return func() { conn.Close() }, ch
}

// throttledWhileHeld holds two requests to path and polls probe until it
// is refused with 429. A probe can reach the server between the two held
// requests and take the second slot (the held request is then the one
// refused), so the round is repeated until both held requests are the
// ones in flight. It returns the 429 response and the release func.
func throttledWhileHeld(t *testing.T, addr, path, token, probe, probeToken string) (*http.Response, map[string]any, func()) {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		r1, a1 := holdRequest(t, addr, path, token)
		r2, a2 := holdRequest(t, addr, path, token)
		release := func() { r1(); r2() }
		refusedHeld := func() bool {
			select {
			case <-a1:
				return true
			case <-a2:
				return true
			default:
				return false
			}
		}
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !refusedHeld(); time.Sleep(20 * time.Millisecond) {
			res, body := call(t, "GET", probe, probeToken, nil, nil)
			if res.StatusCode == http.StatusTooManyRequests {
				time.Sleep(20 * time.Millisecond) // a refusal of a held request may be on its way
				if !refusedHeld() {
					return res, body, release
				}
				break
			}
		}
		release()
		getUntil(t, probe, probeToken, http.StatusOK)
	}
	t.Fatalf("two requests to %s held open did not make %s refused", path, probe)
	return nil, nil, nil
}

// getUntil polls GET url until it answers want (requests held open may
// take a moment to reach the handler), returning the last response.
func getUntil(t *testing.T, u, token string, want int) (*http.Response, map[string]any) {
	t.Helper()
	var res *http.Response
	var body map[string]any
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		res, body = call(t, "GET", u, token, nil, nil)
		if res.StatusCode == want {
			break
		}
	}
	return res, body
}

func checkThrottled(t *testing.T, what string, res *http.Response, body map[string]any) {
	t.Helper()
	issues, _ := body["issue"].([]any)
	code := ""
	if len(issues) == 1 {
		code, _ = issues[0].(map[string]any)["code"].(string)
	}
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") != retryAfter ||
		body["resourceType"] != "OperationOutcome" || code != "throttled" {
		t.Errorf("%s: %d Retry-After %q %.300v; want 429, Retry-After %s and a throttled OperationOutcome", what, res.StatusCode, res.Header.Get("Retry-After"), body, retryAfter)
	}
}

// TestServeClientBound checks the per-client concurrency bound: by source
// address without a token, by token client with one, each independent of
// the other, and freed when the requests end.
func TestServeClientBound(t *testing.T) {
	dir := t.TempDir()
	key, jwks := es384(t)
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, "clients", "add", "--data-dir", dir, "--id", "etl", "--type", "confidential-asymmetric", "--jwks-file", jwksFile, "--scope", "system/*.cruds")
	srv := startServe(t, "--data-dir", dir, "--audit=off", "--max-client-requests", "2")
	addr := hostOf(srv.base)
	tok := backendToken(t, srv.base, "etl", key, "system/*.cruds")
	metadata := srv.base + "/fhir/metadata"

	// Two authenticated requests in flight: the third of that client is
	// refused, an unauthenticated one from the same address is not.
	res, body, release := throttledWhileHeld(t, addr, "/fhir/Patient", tok, srv.base+"/fhir/Patient", tok)
	checkThrottled(t, "third request of the client", res, body)
	if res, _ := call(t, "GET", metadata, "", nil, nil); res.StatusCode != http.StatusOK {
		t.Errorf("unauthenticated request beside a throttled client: %d, want 200", res.StatusCode)
	}
	release()
	if res, body := getUntil(t, srv.base+"/fhir/Patient", tok, http.StatusOK); res.StatusCode != http.StatusOK {
		t.Errorf("client after its requests ended: %d %v, want 200", res.StatusCode, body)
	}

	// Two unauthenticated requests in flight (a login form post held
	// open): the address is throttled, the token client is not.
	res, body, release = throttledWhileHeld(t, addr, "/auth/token", "", metadata, "")
	checkThrottled(t, "third unauthenticated request", res, body)
	if res, body := call(t, "GET", srv.base+"/fhir/Patient", tok, nil, nil); res.StatusCode != http.StatusOK {
		t.Errorf("token client beside a throttled address: %d %v, want 200", res.StatusCode, body)
	}
	release()
	if res, _ := getUntil(t, metadata, "", http.StatusOK); res.StatusCode != http.StatusOK {
		t.Errorf("address after its requests ended: %d, want 200", res.StatusCode)
	}
}

// selfSigned writes a fresh self-signed certificate for 127.0.0.1 and its
// key to certFile and keyFile, returning the certificate.
func selfSigned(t *testing.T, certFile, keyFile, cn string) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	// Written next to the target and renamed, as certificate tools do.
	for path, block := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(path+".new", pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestServeTLS serves HTTPS from --tls-cert/--tls-key, refuses TLS 1.1,
// and serves a replaced certificate without a restart.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := selfSigned(t, certFile, keyFile, "first")
	srv := startServe(t, "--auth=off", "--data-dir", dir, "--tls-cert", certFile, "--tls-key", keyFile)
	addr := hostOf(srv.base)

	// get fetches /fhir/metadata over a new connection trusting only
	// trust, and returns the certificate the server presented.
	get := func(trust *x509.Certificate) (*x509.Certificate, map[string]any, error) {
		pool := x509.NewCertPool()
		pool.AddCert(trust)
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}, Timeout: 10 * time.Second}
		res, err := c.Get("https://" + addr + "/fhir/metadata")
		if err != nil {
			return nil, nil, err
		}
		defer res.Body.Close()
		var cs map[string]any
		if err := json.NewDecoder(res.Body).Decode(&cs); err != nil || res.StatusCode != http.StatusOK {
			return nil, nil, fmt.Errorf("metadata: %d %v", res.StatusCode, err)
		}
		return res.TLS.PeerCertificates[0], cs, nil
	}
	got, cs, err := get(first)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(first) {
		t.Errorf("served certificate %q, want %q", got.Subject.CommonName, first.Subject.CommonName)
	}
	if impl, _ := cs["implementation"].(map[string]any); !strings.HasPrefix(fmt.Sprint(impl["url"]), "https://"+addr) {
		t.Errorf("default base URL with TLS: implementation %v, want https://%s", impl, addr)
	}

	// Plain HTTP on the TLS port gets no FHIR answer.
	if res, err := http.Get("http://" + addr + "/fhir/metadata"); err == nil {
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			t.Error("plain HTTP answered 200 on the TLS port")
		}
	}
	// TLS 1.1 is refused.
	conn, err := tls.Dial("tcp", addr, &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11, InsecureSkipVerify: true})
	if err == nil {
		conn.Close()
		t.Error("TLS 1.1 handshake succeeded")
	}

	// Replace the files: the next connection gets the new certificate.
	second := selfSigned(t, certFile, keyFile, "second")
	if got, _, err = get(second); err != nil {
		t.Fatalf("after replacing the certificate: %v\n%s", err, srv.logs)
	}
	if !got.Equal(second) {
		t.Errorf("after replacing: served %q, want %q", got.Subject.CommonName, second.Subject.CommonName)
	}
	if !strings.Contains(srv.logs.String(), "TLS certificate reloaded") {
		t.Errorf("reload not logged:\n%s", srv.logs)
	}
}

// TestServeMaxHeaderBytes checks that headers beyond --max-header-bytes
// are refused with 431 and smaller ones pass.
func TestServeMaxHeaderBytes(t *testing.T) {
	srv := startServe(t, "--auth=off", "--data-dir", t.TempDir(), "--max-header-bytes", "8192")
	for _, tc := range []struct {
		size int
		want int
	}{{4000, http.StatusOK}, {64 << 10, http.StatusRequestHeaderFieldsTooLarge}} {
		conn, err := net.Dial("tcp", hostOf(srv.base))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\nConnection: close\r\n\r\n", strings.Repeat("a", tc.size))
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("header of %d bytes: %v", tc.size, err)
		}
		res.Body.Close()
		conn.Close()
		if res.StatusCode != tc.want {
			t.Errorf("header of %d bytes: %d, want %d", tc.size, res.StatusCode, tc.want)
		}
	}
}

func TestParseTransport(t *testing.T) {
	tests := []struct {
		args    []string
		env     map[string]string
		check   func(transportConfig) bool
		wantErr bool
	}{
		{nil, nil, func(c transportConfig) bool {
			return c.ReadHeaderTimeout == 10*time.Second && c.ReadTimeout == time.Minute && c.WriteTimeout == 5*time.Minute &&
				c.IdleTimeout == 90*time.Second && c.MaxHeaderBytes == 64<<10 && c.ClientRequests == 32 && c.TLSCert == ""
		}, false},
		{[]string{"--read-header-timeout", "2s", "--max-client-requests", "5"}, map[string]string{"ANODYNE_WRITE_TIMEOUT": "1h", "ANODYNE_TLS_CERT": "c.pem", "ANODYNE_TLS_KEY": "k.pem"}, func(c transportConfig) bool {
			return c.ReadHeaderTimeout == 2*time.Second && c.ClientRequests == 5 && c.WriteTimeout == time.Hour && c.TLSCert == "c.pem" && c.TLSKey == "k.pem"
		}, false},
		{[]string{"--tls-cert", "c.pem"}, nil, nil, true},
		{[]string{"--read-timeout", "0s"}, nil, nil, true},
		{[]string{"--read-header-timeout", "2m", "--read-timeout", "1m"}, nil, nil, true},
		{[]string{"--max-client-requests", "0"}, nil, nil, true},
		{[]string{"--max-header-bytes", "100"}, nil, nil, true},
		{nil, map[string]string{"ANODYNE_TRUSTED_PROXY": "10.0.0.0/8, ::1"}, func(c transportConfig) bool {
			return len(c.Proxies) == 2 && c.Proxies[0].String() == "10.0.0.0/8" && c.Proxies[1].String() == "::1/128"
		}, false},
		{[]string{"--trusted-proxy", "10.0.0.0/33"}, nil, nil, true},
		{[]string{"--trusted-proxy", "proxy.example"}, nil, nil, true},
	}
	for _, tc := range tests {
		cfg, err := parseServe(tc.args, io.Discard, func(k string) string { return tc.env[k] })
		if (err != nil) != tc.wantErr {
			t.Errorf("%v %v: err %v, wantErr %v", tc.args, tc.env, err, tc.wantErr)
			continue
		}
		if err == nil && !tc.check(cfg.Transport) {
			t.Errorf("%v %v: %+v", tc.args, tc.env, cfg.Transport)
		}
	}
}

func TestAddressKey(t *testing.T) {
	tests := []struct{ remote, want string }{
		{"192.0.2.7:5000", "addr:192.0.2.7"},
		{"[2001:db8:1:2:aaaa::1]:443", "addr:2001:db8:1:2::"},
		{"[2001:db8:1:2:bbbb::9]:80", "addr:2001:db8:1:2::"},
		{"[2001:db8:1:3::1]:80", "addr:2001:db8:1:3::"},
		{"@unix", "addr:@unix"},
	}
	for _, tc := range tests {
		if got := addressKey(tc.remote); got != tc.want {
			t.Errorf("addressKey(%q) = %q, want %q", tc.remote, got, tc.want)
		}
	}
}

// TestTransportDeadlines runs newHTTPServer's server over real HTTP with
// short timeouts: a handler may outlive --read-timeout once the body is
// in (its context stays live), an export file download may outlive
// --write-timeout while it keeps moving, and any other response is cut
// at --write-timeout.
func TestTransportDeadlines(t *testing.T) {
	tc := transportConfig{ReadHeaderTimeout: 100 * time.Millisecond, ReadTimeout: 200 * time.Millisecond,
		WriteTimeout: time.Second, IdleTimeout: time.Second, MaxHeaderBytes: 8192, ClientRequests: 8}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mux := http.NewServeMux()
	mux.HandleFunc("POST /slow-handler", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		time.Sleep(500 * time.Millisecond) // past the read timeout, within the write timeout
		if err := r.Context().Err(); err != nil {
			http.Error(w, "context: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "done")
	})
	stream := func(w http.ResponseWriter, r *http.Request) {
		for range 10 { // 2 s in all, twice the write timeout
			if _, err := io.WriteString(w, strings.Repeat("x", 1000)+"\n"); err != nil {
				return
			}
			_ = http.NewResponseController(w).Flush()
			time.Sleep(200 * time.Millisecond)
		}
	}
	mux.HandleFunc("GET /fhir/$export-file/job/file", stream)
	mux.HandleFunc("GET /fhir/Patient", stream)
	hs, err := newHTTPServer(tc, mux, newClientLimiter(tc.ClientRequests, log), false, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	base := "http://" + ln.Addr().String()

	res, err := http.Post(base+"/slow-handler", "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(body) != "done" {
		t.Errorf("handler past the read timeout: %d %q, want 200 done", res.StatusCode, body)
	}
	for _, tc := range []struct {
		path string
		full bool
	}{{"/fhir/$export-file/job/file", true}, {"/fhir/Patient", false}} {
		res, err := http.Get(base + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if got := err == nil && len(b) == 10*1001; got != tc.full {
			t.Errorf("GET %s streaming past the write timeout: read %d bytes (err %v), complete %v, want %v", tc.path, len(b), err, got, tc.full)
		}
	}
}
