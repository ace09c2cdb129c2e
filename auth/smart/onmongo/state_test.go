// Package onmongo_test runs the authorization server's stateful paths on
// the MongoDB backend's KV. It is a package of its own so that the main
// auth/smart tests build without the MongoDB driver and FerretDB.
package onmongo_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth/smart"
	"github.com/anodyne-fhir/anodyne/storage/mongo"
	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
)

// TestStateOnMongoDB covers keys, clients, assertion replay, token records
// and revocation on MongoDB (embedded FerretDB unless
// ANODYNE_TEST_MONGODB_URI is set).
func TestStateOnMongoDB(t *testing.T) {
	if testing.Short() {
		t.Skip("starts FerretDB")
	}
	ctx := context.Background()
	srv, err := mongotest.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	be, err := mongo.Open(ctx, srv.URI, mongotest.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	hs := httptest.NewUnstartedServer(nil)
	base := "http://" + hs.Listener.Addr().String()
	as, err := smart.New(ctx, smart.Config{BaseURL: base, KV: be.KV(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	as.Register(e)
	hs.Config.Handler = e
	hs.Start()
	defer hs.Close()

	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES384"}}})
	if _, err := smart.RegisterClient(ctx, as.Clients(), &smart.Client{ID: "hub", Type: smart.ClientAsymmetric, JWKS: jwks, Scopes: "system/*.rs"}, ""); err != nil {
		t.Fatal(err)
	}
	assertion := func() string {
		sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES384, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		p, _ := json.Marshal(map[string]any{"iss": "hub", "sub": "hub", "aud": base + "/auth/token", "exp": time.Now().Add(2 * time.Minute).Unix(), "jti": hex.EncodeToString(b)})
		jws, err := sg.Sign(p)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := jws.CompactSerialize()
		return s
	}
	post := func(path string, form url.Values) (int, map[string]any) {
		resp, err := http.PostForm(base+path, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	clientAuth := func(f url.Values) url.Values {
		f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		f.Set("client_assertion", assertion())
		return f
	}

	form := clientAuth(url.Values{"grant_type": {"client_credentials"}, "scope": {"system/*.rs"}})
	st, body := post("/auth/token", form)
	if st != 200 {
		t.Fatalf("token = %d %v", st, body)
	}
	tok := body["access_token"].(string)
	if st, body := post("/auth/token", form); st != 401 || body["error"] != "invalid_client" {
		t.Errorf("replayed assertion = %d %v", st, body)
	}
	if _, body := post("/auth/introspect", clientAuth(url.Values{"token": {tok}})); body["active"] != true || body["client_id"] != "hub" {
		t.Errorf("introspection = %v", body)
	}
	if st, _ := post("/auth/revoke", clientAuth(url.Values{"token": {tok}})); st != 200 {
		t.Errorf("revoke = %d", st)
	}
	if _, body := post("/auth/introspect", clientAuth(url.Values{"token": {tok}})); body["active"] != false || len(body) != 1 {
		t.Errorf("revoked token introspection = %v", body)
	}
	// A restart on the same database keeps the signing key.
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/auth/jwks", nil))
	as2, err := smart.New(ctx, smart.Config{BaseURL: base, KV: be.KV(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	e2 := echo.New()
	as2.Register(e2)
	rec2 := httptest.NewRecorder()
	e2.ServeHTTP(rec2, httptest.NewRequest(http.MethodGet, "/auth/jwks", nil))
	if rec.Body.String() != rec2.Body.String() || !strings.Contains(rec.Body.String(), `"kid"`) {
		t.Errorf("JWKS changed across a restart:\n%s\n%s", rec.Body, rec2.Body)
	}
}
