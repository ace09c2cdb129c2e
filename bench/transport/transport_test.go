// Package transport is the load test of the HTTP transport limits: the
// real "anodyne serve" binary (auth and audit on, default timeouts, a real
// backend-services token) on loopback, with a normal client's read latency
// measured alone and then beside 200 slow connections (100 sending headers
// a byte a second, 100 sending a form body a byte a second, each from its
// own 127.0.0.x address) and 1,000 idle keep-alive connections. It owns no
// product code and must not be imported.
//
// Skipped unless ANODYNE_BENCH_TRANSPORT=1 (about 30 s, most of it the
// build):
//
//	ANODYNE_BENCH_TRANSPORT=1 go test -run TestTransportLoad -v ./bench/transport/
package transport

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	slowConns   = 200
	idleConns   = 1000
	samples     = 400
	dribbleStep = time.Second
)

// startBinary builds anodyne, registers a backend client and runs serve;
// it returns the base URL and the client's private key.
func startBinary(t *testing.T) (string, *ecdsa.PrivateKey) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "anodyne")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/anodyne").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES384", Use: "sig"}}})
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if out, err := exec.Command(bin, "clients", "add", "--data-dir", data, "--id", "app", "--type", "confidential-asymmetric",
		"--jwks-file", jwksFile, "--scope", "system/*.cruds").CombinedOutput(); err != nil {
		t.Fatalf("clients add: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--log-format", "json", "--log-level", "warn")
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Warn level keeps the per-request log lines out of the figures (and
	// the listening line with them: the port is read from /proc instead).
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	addr := listeningAddr(t, cmd.Process.Pid)
	return "http://" + addr, key
}

// listeningAddr finds the TCP port process pid listens on (Linux /proc).
func listeningAddr(t *testing.T, pid int) string {
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		inodes := map[string]bool{}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
				inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
			}
		}
		b, _ := os.ReadFile("/proc/net/tcp")
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 9 && f[3] == "0A" && inodes[f[9]] { // 0A: LISTEN
				var port int
				fmt.Sscanf(f[1][strings.Index(f[1], ":")+1:], "%X", &port)
				addr := fmt.Sprintf("127.0.0.1:%d", port)
				if res, err := http.Get("http://" + addr + "/healthz"); err == nil {
					res.Body.Close()
					return addr
				}
			}
		}
	}
	t.Fatal("server did not start listening")
	return ""
}

func token(t *testing.T, base string, key *ecdsa.PrivateKey) string {
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES384, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{"iss": "app", "sub": "app", "aud": base + "/auth/token", "exp": now.Add(4 * time.Minute).Unix(), "iat": now.Unix(), "jti": rand.Text()})
	jws, err := sg.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	assertion, _ := jws.CompactSerialize()
	res, err := http.PostForm(base+"/auth/token", url.Values{
		"grant_type": {"client_credentials"}, "scope": {"system/*.cruds"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body map[string]string
	_ = json.NewDecoder(res.Body).Decode(&body)
	if res.StatusCode != http.StatusOK || body["access_token"] == "" {
		t.Fatalf("token: %d %v", res.StatusCode, body)
	}
	return body["access_token"]
}

// measure reads one Patient samples times over one keep-alive connection
// and returns p50 and p99.
func measure(t *testing.T, u, tok string) (p50, p99 time.Duration) {
	c := &http.Client{Timeout: 30 * time.Second}
	lat := make([]time.Duration, 0, samples)
	for range samples {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Accept", "application/fhir+json")
		start := time.Now()
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		lat = append(lat, time.Since(start))
		if res.StatusCode != http.StatusOK {
			t.Fatalf("normal client: %d", res.StatusCode)
		}
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100]
}

// dialFrom connects to addr from 127.0.x.y, so that each attacker has
// its own source address (the server bounds requests per address).
func dialFrom(addr string, i int) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, byte(1+i/250), byte(i%250), 2)}}
	return d.Dial("tcp", addr)
}

func TestTransportLoad(t *testing.T) {
	if os.Getenv("ANODYNE_BENCH_TRANSPORT") != "1" {
		t.Skip("load test: set ANODYNE_BENCH_TRANSPORT=1")
	}
	base, key := startBinary(t)
	tok := token(t, base, key)
	addr := strings.TrimPrefix(base, "http://")
	req, _ := http.NewRequest(http.MethodPut, base+"/fhir/Patient/p1", strings.NewReader(`{"resourceType":"Patient","id":"p1","name":[{"family":"Load"}]}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/fhir+json")
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("PUT Patient: %v %v", err, res)
	}
	res.Body.Close()
	read := base + "/fhir/Patient/p1"

	measure(t, read, tok) // warm-up
	alone50, alone99 := measure(t, read, tok)

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	var dribbling atomic.Int64 // slow clients whose connection is still open
	keep := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	// Slow connections: half dribble headers, half a form body.
	for i := range slowConns {
		c, err := dialFrom(addr, i)
		if err != nil {
			t.Fatalf("slow connection %d: %v", i, err)
		}
		keep(c)
		head := "GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n"
		more := strings.Repeat("X-Slow: 1\r\n", 1000)
		if i%2 == 1 {
			head = "POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n"
			more = strings.Repeat("a", 100000)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := io.WriteString(c, head); err != nil {
				return
			}
			dribbling.Add(1)
			defer dribbling.Add(-1)
			for j := 0; j < len(more); j++ {
				select {
				case <-ctx.Done():
					return
				case <-time.After(dribbleStep):
				}
				if _, err := c.Write([]byte{more[j]}); err != nil {
					return
				}
			}
		}()
	}
	// Idle keep-alives: one request each, then silence.
	for i := range idleConns {
		c, err := dialFrom(addr, slowConns+i)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		keep(c)
		fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("idle connection %d: %v %v", i, err, res)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	time.Sleep(2 * time.Second) // every slow client has started dribbling
	loaded50, loaded99 := measure(t, read, tok)
	stillSlow := dribbling.Load()
	stop()
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	t.Logf("normal client GET Patient/p1 over keep-alive, %d samples, auth+audit on:", samples)
	t.Logf("  alone:                                     p50 %v  p99 %v", alone50.Round(time.Microsecond), alone99.Round(time.Microsecond))
	t.Logf("  beside %d slow + %d idle connections:   p50 %v  p99 %v  (%d slow clients still connected after the run)", slowConns, idleConns, loaded50.Round(time.Microsecond), loaded99.Round(time.Microsecond), stillSlow)
}
