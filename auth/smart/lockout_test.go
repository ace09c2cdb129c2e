package smart_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/auth/smart"
)

// TestLoginLockout drives the real sign-in page: repeated wrong passwords
// lock the user name (a correct password is refused while locked), an
// unknown user name locks the same way (no account oracle), the lock
// lapses, a success clears the count, and the next lock lasts twice as long.
func TestLoginLockout(t *testing.T) {
	const base = time.Minute
	var offset atomic.Int64 // the test's clock runs ahead of the wall clock by this much
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	sleep := func(d time.Duration) { offset.Add(int64(d)) }
	e := newEnv(t, func(ec *envConfig) {
		ec.Lockout = smart.Lockout{Threshold: 3, Base: base, Max: time.Hour}
		ec.Now = now
	})
	e.addClient(smart.Client{ID: "app", Type: smart.ClientPublic, RedirectURIs: []string{redirect}, Scopes: "launch/patient patient/*.rs"}, "")
	e.addAccount("alice", "Patient/a")
	app := e.app("app", redirect, "launch/patient", "patient/Observation.rs")
	v := oauth2.GenerateVerifier()
	authURL := app.AuthCodeURL("st", oauth2.SetAuthURLParam("aud", e.fhirBase), oauth2.S256ChallengeOption(v))

	try := func(user, password string) string {
		t.Helper()
		b := newBrowser(t, redirect)
		p := b.get(authURL)
		p = b.submit(p, url.Values{"username": {user}, "password": {password}})
		switch {
		case strings.Contains(p.body, "locked until"):
			return "locked"
		case strings.Contains(p.body, "wrong password"):
			return "wrong"
		case p.loc != "" || strings.Contains(p.body, "Allow access?") || strings.Contains(p.body, "Choose a patient"):
			return "signed in"
		}
		t.Fatalf("unexpected page %d %q: %s", p.status, p.loc, p.body)
		return ""
	}

	for _, user := range []string{"alice", "mallory"} {
		var got []string
		for range 5 {
			got = append(got, try(user, "wrong password!"))
		}
		want := []string{"wrong", "wrong", "wrong", "locked", "locked"}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: wrong passwords answered %v, want %v", user, got, want)
		}
	}
	if got := try("alice", "correct horse battery"); got != "locked" {
		t.Errorf("correct password while locked: %s, want locked", got)
	}
	// A spray against the locked name is refused without reaching the
	// password check (the answer is the lock, never "wrong password").
	for i := range 200 {
		if got := try("alice", "guess-"+strings.Repeat("x", i%7)); got != "locked" {
			t.Fatalf("attempt %d during the lock: %s", i, got)
		}
	}

	sleep(base + time.Second)
	if got := try("alice", "correct horse battery"); got != "signed in" {
		t.Fatalf("after the lock lapsed: %s, want signed in", got)
	}
	// The success cleared the run: two failures do not lock.
	for range 2 {
		if got := try("alice", "wrong password!"); got != "wrong" {
			t.Errorf("after a success: %s, want wrong", got)
		}
	}
	if got := try("alice", "correct horse battery"); got != "signed in" {
		t.Fatalf("two failures then the right password: %s", got)
	}

	// mallory's second lock lasts 2×base: still locked after base+1s.
	sleep(base + time.Second)
	for range 3 {
		try("mallory", "wrong password!")
	}
	sleep(base + time.Second)
	if got := try("mallory", "wrong password!"); got != "locked" {
		t.Errorf("second lock after base+1s: %s, want still locked (doubled)", got)
	}
	sleep(base)
	if got := try("mallory", "wrong password!"); got != "wrong" {
		t.Errorf("second lock after 2×base+1s: %s, want lapsed", got)
	}
}

// TestLoginSourceLimit: a password spray from one address across many user
// names (none reaching its own lock) is slowed by the per-source budget.
func TestLoginSourceLimit(t *testing.T) {
	e := newEnv(t, func(ec *envConfig) { ec.PasswordChecksPerMinute = 5 })
	e.addClient(smart.Client{ID: "app", Type: smart.ClientPublic, RedirectURIs: []string{redirect}, Scopes: "launch/patient patient/*.rs"}, "")
	e.addAccount("alice", "Patient/a")
	app := e.app("app", redirect, "launch/patient", "patient/Observation.rs")
	authURL := app.AuthCodeURL("st", oauth2.SetAuthURLParam("aud", e.fhirBase), oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
	var wrong, limited int
	for i := range 8 {
		b := newBrowser(t, redirect)
		p := b.submit(b.get(authURL), url.Values{"username": {fmt.Sprintf("user%d", i)}, "password": {"hunter2"}})
		switch {
		case strings.Contains(p.body, "Too many sign-in attempts from your address"):
			limited++
			if got := p.header.Get("Retry-After"); got != "60" {
				t.Errorf("limited sign-in page: Retry-After = %q, want 60", got)
			}
		case strings.Contains(p.body, "wrong password"):
			wrong++
		default:
			t.Fatalf("unexpected page %d: %s", p.status, p.body)
		}
	}
	if wrong != 5 || limited != 3 {
		t.Errorf("8 attempts from one address: %d checked, %d limited; want 5 and 3", wrong, limited)
	}
	// The real password from the same address is limited too: the budget
	// is the address's, whatever the account.
	b := newBrowser(t, redirect)
	if p := b.submit(b.get(authURL), url.Values{"username": {"alice"}, "password": {"correct horse battery"}}); !strings.Contains(p.body, "Too many sign-in attempts") {
		t.Errorf("right password over the address budget: %d %s", p.status, p.body)
	}
}

// TestTokenSourceLimitRetryAfter: a client over its address's budget of
// secret checks is refused with 503 temporarily_unavailable and told, by
// Retry-After, how long the refusal lasts (TestLoginSourceLimit checks the
// same header on the sign-in page).
func TestTokenSourceLimitRetryAfter(t *testing.T) {
	e := newEnv(t, func(ec *envConfig) { ec.PasswordChecksPerMinute = 2 })
	secret := e.addClient(smart.Client{ID: "conf", Type: smart.ClientSymmetric, Scopes: "system/*.rs"}, "")
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"system/Observation.rs"}}
	wrong := http.Header{"Authorization": {"Basic " + basicAuth("conf", secret+"x")}}
	for i := range 2 {
		if st, body, hdr := e.postForm("/auth/token", form, wrong); st != http.StatusUnauthorized || hdr.Get("Retry-After") != "" {
			t.Fatalf("attempt %d within budget: %d %v Retry-After=%q", i, st, body, hdr.Get("Retry-After"))
		}
	}
	right := http.Header{"Authorization": {"Basic " + basicAuth("conf", secret)}}
	st, body, hdr := e.postForm("/auth/token", form, right)
	if st != http.StatusServiceUnavailable || body["error"] != "temporarily_unavailable" {
		t.Fatalf("over budget: %d %v, want 503 temporarily_unavailable", st, body)
	}
	if got := hdr.Get("Retry-After"); got != "60" {
		t.Errorf("Retry-After = %q, want 60 (the budget refills over a minute)", got)
	}
}

// failingLockoutSink refuses security events and passes the rest on.
type failingLockoutSink struct{ auth.AuditSink }

func (f failingLockoutSink) RecordAudit(ctx context.Context, ev auth.AuditEvent) error {
	if ev.Category.Type.Code != "" {
		return errors.New("audit store unavailable")
	}
	return f.AuditSink.RecordAudit(ctx, ev)
}

// TestLockoutAudited: each lock-out (of a real or an unknown user name)
// is one AuditEvent in the audit trail, found by its subtype, naming the
// user name as typed, the client, the source address and the lock's end;
// attempts refused while locked add none. When the event cannot be
// stored the attempt fails loudly, and the lock holds all the same.
func TestLockoutAudited(t *testing.T) {
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	e := newEnv(t, func(ec *envConfig) {
		ec.Lockout = smart.Lockout{Threshold: 3, Base: time.Minute, Max: time.Hour}
		ec.Now = now
	})
	e.addClient(smart.Client{ID: "app", Type: smart.ClientPublic, RedirectURIs: []string{redirect}, Scopes: "launch/patient patient/*.rs"}, "")
	e.addAccount("alice", "Patient/a")
	admin := newSigner(t, jose.ES384)
	e.addClient(smart.Client{ID: "auditor", Type: smart.ClientAsymmetric, JWKS: admin.jwks(), Scopes: "system/AuditEvent.rs"}, "")
	app := e.app("app", redirect, "launch/patient", "patient/Observation.rs")
	authURL := app.AuthCodeURL("st", oauth2.SetAuthURLParam("aud", e.fhirBase), oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
	try := func(user string) page {
		b := newBrowser(t, redirect)
		return b.submit(b.get(authURL), url.Values{"username": {user}, "password": {"wrong password!"}})
	}
	lockouts := func() []map[string]any {
		t.Helper()
		at := e.backendToken("auditor", admin, "system/AuditEvent.rs")
		st, bundle, _ := e.fhirDo(http.MethodGet, "/AuditEvent?subtype=https://github.com/anodyne-fhir/anodyne/CodeSystem/audit-event-subtype|account-lockout", at, nil)
		if st != http.StatusOK {
			t.Fatalf("audit search = %d %v", st, bundle)
		}
		var out []map[string]any
		for _, en := range entryList(bundle) {
			out = append(out, en.(map[string]any)["resource"].(map[string]any))
		}
		return out
	}
	for range 5 { // 3 failures lock; 2 more are refused by the lock
		try("alice")
	}
	for range 3 {
		try("mallory")
	}
	evs := lockouts()
	if len(evs) != 2 {
		t.Fatalf("%d lock-out AuditEvents, want 2 (alice, mallory): %v", len(evs), evs)
	}
	users := map[string]bool{}
	for _, ev := range evs {
		raw, _ := json.Marshal(ev)
		s := string(raw)
		var who string
		for _, a := range ev["agent"].([]any) {
			if w, ok := a.(map[string]any)["who"].(map[string]any)["display"].(string); ok {
				who = w
			}
		}
		users[who] = true
		for _, want := range []string{
			`"code":"110114"`, `"code":"110122"`, `"action":"E"`, `"outcome":"4"`, `"value":"app"`,
			`"address":"127.0.0.1"`, `"outcomeDesc":"user name locked until `, `after 3 consecutive failed sign-ins (lock 1)`,
		} {
			if !strings.Contains(s, want) {
				t.Errorf("lock-out event of %q lacks %s: %s", who, want, s)
			}
		}
	}
	if !users["alice"] || !users["mallory"] {
		t.Errorf("lock-out events name %v, want alice and mallory", users)
	}

	// An audit trail that cannot take the event: the third failure is an
	// error page, and the lock is in force.
	f := newEnv(t, func(ec *envConfig) {
		ec.Lockout = smart.Lockout{Threshold: 3, Base: time.Minute, Max: time.Hour}
		ec.wrapSink = func(s auth.AuditSink) auth.AuditSink { return failingLockoutSink{s} }
	})
	f.addClient(smart.Client{ID: "app", Type: smart.ClientPublic, RedirectURIs: []string{redirect}, Scopes: "launch/patient patient/*.rs"}, "")
	f.addAccount("alice", "Patient/a")
	fapp := f.app("app", redirect, "launch/patient", "patient/Observation.rs")
	fURL := fapp.AuthCodeURL("st", oauth2.SetAuthURLParam("aud", f.fhirBase), oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
	var statuses []int
	var last page
	for range 4 {
		b := newBrowser(t, redirect)
		last = b.submit(b.get(fURL), url.Values{"username": {"alice"}, "password": {"wrong password!"}})
		statuses = append(statuses, last.status)
	}
	if fmt.Sprint(statuses[:3]) != "[401 401 500]" || !strings.Contains(last.body, "locked until") {
		t.Errorf("with a failing audit sink: statuses %v, last page %q; want [401 401 500 …] and then locked", statuses, last.body)
	}
}
