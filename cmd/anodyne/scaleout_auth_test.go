package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// balancer is a reverse proxy in front of serve processes that sends
// every request to the process the test picks, as a load balancer may.
type balancer struct {
	url    string
	target atomic.Pointer[url.URL]
}

func startBalancer(t *testing.T) *balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{url: "http://" + ln.Addr().String()}
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(b.target.Load())
		r.Out.Host = r.In.Host // the processes answer for the public address
	}}
	srv := &http.Server{Handler: proxy}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

func (b *balancer) to(t *testing.T, root string) {
	t.Helper()
	u, err := url.Parse(root)
	if err != nil {
		t.Fatal(err)
	}
	b.target.Store(u)
}

// TestScaleOutAuthState runs two "anodyne serve" processes (auth and audit
// on, the defaults) on one FerretDB database behind a balancer: a refresh
// token redeemed on one is refused on the other, a revocation on one holds
// on the other (for the refresh token and the access tokens of its
// grant), failed sign-ins on both count towards one lock-out, and the
// per-address budget of password checks is one budget across both.
func TestScaleOutAuthState(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	uri, db := ownFerretDB(ctx, t)
	store := []string{"--mongodb-uri", uri, "--mongodb-database", db}
	const redirect = "https://diary.example/callback"
	cli(t, append([]string{"clients", "add", "--id", "diary", "--type", "public", "--redirect-uri", redirect,
		"--scope", "openid fhirUser launch/patient offline_access patient/*.rs"}, store...)...)
	pw := t.TempDir() + "/pw"
	if err := os.WriteFile(pw, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, append([]string{"users", "add", "--username", "dr.who", "--fhir-user", "Practitioner/p1", "--patient", "a", "--password-file", pw}, store...)...)

	lb := startBalancer(t)
	const budget = 8 // password checks per minute and source
	args := []string{"--auth=on", "--audit=on", "--base-url", lb.url, "--password-checks-per-minute", fmt.Sprint(budget)}
	a := serveMongoChild(t, uri, db, args...)
	b := serveMongoChild(t, uri, db, args...)
	// Every password check comes from the balancer's address: one source.
	checks, first := 0, time.Now()

	// Sign in through a, get tokens with a refresh token.
	lb.to(t, a)
	app := &oauth2.Config{
		ClientID: "diary", RedirectURL: redirect,
		Scopes:   []string{"openid", "fhirUser", "launch/patient", "offline_access", "patient/Observation.rs"},
		Endpoint: oauth2.Endpoint{AuthURL: lb.url + "/auth/authorize", TokenURL: lb.url + "/auth/token", AuthStyle: oauth2.AuthStyleInParams},
	}
	verifier := oauth2.GenerateVerifier()
	br := newBrowser(t, redirect)
	authorize := func() page {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, app.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("aud", lb.url+"/fhir")), nil)
		p := br.do(req)
		if !strings.Contains(p.body, "Sign in") {
			t.Fatalf("expected the login page: %s %s", p.loc, p.body)
		}
		return p
	}
	p := br.submit(authorize(), url.Values{"username": {"dr.who"}, "password": {"correct horse battery staple"}})
	checks++
	if !strings.Contains(p.body, "Allow access?") {
		t.Fatalf("expected the consent page: %s", p.body)
	}
	var offered []string
	for _, m := range scopeRe.FindAllStringSubmatch(p.body, -1) {
		offered = append(offered, m[1])
	}
	p = br.submit(p, url.Values{"scope": offered, "decision": {"allow"}})
	back, err := url.Parse(p.loc)
	if err != nil || back.Query().Get("code") == "" {
		t.Fatalf("redirect to the app: %q %s", p.loc, p.body)
	}
	tok, err := app.Exchange(ctx, back.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token for offline_access")
	}
	search := func(root, access string) int {
		t.Helper()
		res, _ := call(t, http.MethodGet, root+"/fhir/Observation", access, nil, nil)
		return res.StatusCode
	}
	for _, root := range []string{a, b} {
		if code := search(root, tok.AccessToken); code != http.StatusOK {
			t.Fatalf("search on %s with a's token: %d", root, code)
		}
	}
	refresh := func(root, rt string) (int, map[string]any) {
		t.Helper()
		lb.to(t, root)
		res, body := form(t, lb.url+"/auth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"diary"}})
		return res, body
	}

	t.Run("refresh token used on b is refused on a", func(t *testing.T) {
		code, body := refresh(b, tok.RefreshToken)
		if code != http.StatusOK || body["refresh_token"] == nil {
			t.Fatalf("refresh on b: %d %v", code, body)
		}
		code, body2 := refresh(a, tok.RefreshToken)
		if code != http.StatusBadRequest || body2["error"] != "invalid_grant" {
			t.Fatalf("second use of the refresh token on a: %d %v; want 400 invalid_grant", code, body2)
		}
		// Revoked on a: refused on b, and the grant's access token with it.
		rt, at := body["refresh_token"].(string), body["access_token"].(string)
		if code := search(b, at); code != http.StatusOK {
			t.Fatalf("search on b with the refreshed token: %d", code)
		}
		lb.to(t, a)
		if res, rb := form(t, lb.url+"/auth/revoke", url.Values{"token": {rt}, "client_id": {"diary"}}); res != http.StatusOK {
			t.Fatalf("revoke on a: %d %v", res, rb)
		}
		if code, body := refresh(b, rt); code != http.StatusBadRequest || body["error"] != "invalid_grant" {
			t.Fatalf("revoked refresh token on b: %d %v", code, body)
		}
		if code := search(b, at); code != http.StatusUnauthorized {
			t.Fatalf("search on b with an access token of the revoked grant: %d, want 401", code)
		}
	})

	signIn := func(root string, login page, user string) page {
		t.Helper()
		lb.to(t, root)
		return br.submit(login, url.Values{"username": {user}, "password": {"wrong"}})
	}
	t.Run("failed sign-ins on both processes lock the name", func(t *testing.T) {
		login := authorize()
		// The default lock-out threshold is 5 failures.
		for i := range 5 {
			login = signIn([]string{a, b}[i%2], login, "victim")
			checks++
			if !strings.Contains(login.body, "wrong password") {
				t.Fatalf("failure %d: %s", i+1, login.body)
			}
		}
		for _, root := range []string{a, b} {
			if p := signIn(root, login, "victim"); !strings.Contains(p.body, "this account is locked") {
				t.Fatalf("6th attempt on %s not locked: %s", root, p.body)
			}
		}
	})

	t.Run("one password-check budget across processes", func(t *testing.T) {
		login := authorize()
		refused := ""
		for i := 0; i < 3*budget && refused == ""; i++ {
			root := []string{a, b}[i%2]
			p := signIn(root, login, fmt.Sprintf("spray-%d", i))
			switch {
			case strings.Contains(p.body, "Too many sign-in attempts from your address"):
				refused = root
			case strings.Contains(p.body, "wrong password"):
				checks++
				login = p
			default:
				t.Fatalf("sign-in %d: %s", i, p.body)
			}
		}
		elapsed := time.Since(first)
		// The budget refills at budget a minute: allowed at most the
		// budget plus what refilled since the first check.
		limit := budget + int(math.Ceil(elapsed.Minutes()*budget))
		if refused == "" || checks > limit {
			t.Fatalf("%d checks allowed over both processes in %s (refused on %q); one budget allows at most %d", checks, elapsed.Round(time.Millisecond), refused, limit)
		}
		other := a
		if refused == a {
			other = b
		}
		if p := signIn(other, login, "spray-last"); !strings.Contains(p.body, "Too many sign-in attempts from your address") {
			t.Fatalf("the other process still checks passwords after the budget is spent: %s", p.body)
		}
	})
}

// form posts an urlencoded form and decodes the JSON answer.
func form(t *testing.T, u string, v url.Values) (int, map[string]any) {
	t.Helper()
	res, err := http.PostForm(u, v)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(res.Body).Decode(&m)
	return res.StatusCode, m
}
