package smart_test

import (
	"context"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/auth/smart"
	"github.com/anodyne-fhir/anodyne/storage/mongo"
	"github.com/anodyne-fhir/anodyne/storage/mongo/mongotest"
)

// TestStateOnMongoDB runs the authorization server's stateful paths (keys,
// clients, assertion replay, token records, revocation) on the MongoDB
// backend's KV (embedded FerretDB unless ANODYNE_TEST_MONGODB_URI is set).
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
	env := &env{t: t, srv: hs, as: as, kv: be.KV(), base: base, fhirBase: base + "/fhir"}

	s := newSigner(t, jose.ES384)
	env.addClient(smart.Client{ID: "hub", Type: smart.ClientAsymmetric, JWKS: s.jwks(), Scopes: "system/*.rs"}, "")
	form := url.Values{
		"grant_type": {"client_credentials"}, "scope": {"system/*.rs"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {s.assertion(t, "hub", base+"/auth/token", nil, nil)},
	}
	st, body, _ := env.postForm("/auth/token", form, nil)
	if st != 200 {
		t.Fatalf("token = %d %v", st, body)
	}
	tok := body["access_token"].(string)
	if st, body, _ := env.postForm("/auth/token", form, nil); st != 401 || body["error"] != "invalid_client" {
		t.Errorf("replayed assertion = %d %v", st, body)
	}
	bearer := map[string][]string{"Authorization": {"Bearer " + tok}}
	if _, body, _ := env.postForm("/auth/introspect", url.Values{"token": {tok}}, bearer); body["active"] != true || body["client_id"] != "hub" {
		t.Errorf("introspection = %v", body)
	}
	revoke := url.Values{"token": {tok}, "client_assertion_type": form["client_assertion_type"], "client_assertion": {s.assertion(t, "hub", base+"/auth/token", nil, nil)}}
	if st, _, _ := env.postForm("/auth/revoke", revoke, nil); st != 200 {
		t.Errorf("revoke = %d", st)
	}
	other := url.Values{"token": {tok}, "client_assertion_type": form["client_assertion_type"], "client_assertion": {s.assertion(t, "hub", base+"/auth/token", nil, nil)}}
	if _, body, _ := env.postForm("/auth/introspect", other, nil); body["active"] != false {
		t.Errorf("revoked token introspection = %v", body)
	}
	// A restart on the same database keeps the signing key.
	_, jwks1, _ := getJSON(t, base+"/auth/jwks", nil)
	as2, err := smart.New(ctx, smart.Config{BaseURL: base, KV: be.KV(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	e2 := echo.New()
	as2.Register(e2)
	rec := httptest.NewRecorder()
	e2.ServeHTTP(rec, httptest.NewRequest("GET", "/auth/jwks", nil))
	k1 := jwks1["keys"].([]any)[0].(map[string]any)["kid"].(string)
	if !strings.Contains(rec.Body.String(), k1) {
		t.Errorf("restarted server lost key %s: %s", k1, rec.Body)
	}
}
