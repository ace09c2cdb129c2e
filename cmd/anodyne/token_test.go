package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// TestTokenCommand: clients add --generate-key writes a private ES384 JWK
// (0600, never over an existing file) and registers its public half;
// anodyne token then gets real access tokens from the secure default
// server started in-process, which the FHIR API honours with exactly the
// scopes granted. A wrong key, a scope beyond the registration and a
// server that is not there fail with messages that say so.
func TestTokenCommand(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "etl.jwk")
	out := cli(t, "clients", "add", "--data-dir", dir, "--id", "etl", "--generate-key", keyFile, "--scope", "system/*.cruds")
	if !strings.Contains(out, "anodyne token --client etl --key "+keyFile) {
		t.Errorf("clients add does not say how to get a token: %s", out)
	}
	info, err := os.Stat(keyFile)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, info.Mode())
	}
	var jwk jose.JSONWebKey
	raw, _ := os.ReadFile(keyFile)
	if err := json.Unmarshal(raw, &jwk); err != nil || jwk.IsPublic() || jwk.Algorithm != "ES384" || jwk.KeyID == "" {
		t.Fatalf("key file is not a private ES384 JWK with a kid: %v %s", err, raw)
	}
	if list := cli(t, "clients", "list", "--data-dir", dir); !strings.Contains(list, "etl  ") || !strings.Contains(list, "confidential-asymmetric") {
		t.Errorf("clients list: %s", list)
	}
	// An existing key file is never overwritten, and the client whose key
	// could not be written is not registered.
	if msg := runErr(t, "clients", "add", "--data-dir", dir, "--id", "other", "--generate-key", keyFile); !strings.Contains(msg, "file exists") {
		t.Errorf("generate-key over an existing file: %s", msg)
	}
	if again, _ := os.ReadFile(keyFile); string(again) != string(raw) {
		t.Error("the existing key file was changed")
	}
	if list := cli(t, "clients", "list", "--data-dir", dir); strings.Contains(list, "other") {
		t.Errorf("a client without its key was registered: %s", list)
	}
	if code, _, _ := runCode(t, "clients", "add", "--data-dir", dir, "--id", "x", "--generate-key", filepath.Join(dir, "x.jwk"), "--type", "public"); code != 2 {
		t.Errorf("--generate-key with --type public: status %d", code)
	}
	readerKey := filepath.Join(dir, "reader.jwk")
	cli(t, "clients", "add", "--data-dir", dir, "--id", "reader", "--generate-key", readerKey, "--scope", "system/Patient.rs")

	// An RSA key in PEM, registered with --jwks-file, works as well.
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(rk)
	pemFile := filepath.Join(dir, "rsa.pem")
	os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	pemKey, err := signingKey(pemFile)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pemKey.Public()}})
	jwksFile := filepath.Join(dir, "rsa.jwks")
	os.WriteFile(jwksFile, jwks, 0o600)
	cli(t, "clients", "add", "--data-dir", dir, "--id", "rsa", "--type", "confidential-asymmetric", "--jwks-file", jwksFile, "--scope", "system/Patient.rs")

	srv := startServe(t, "--data-dir", dir, "--audit=off")
	fhirBase := srv.base + "/fhir"
	etl := strings.TrimSpace(cli(t, "token", "--client", "etl", "--key", keyFile, "--scope", "system/*.cruds", "--server", fhirBase))
	reader := strings.TrimSpace(cli(t, "token", "--client", "reader", "--key", readerKey, "--scope", "system/Patient.rs", "--server", fhirBase))
	rsaTok := strings.TrimSpace(cli(t, "token", "--client", "rsa", "--key", pemFile, "--scope", "system/Patient.rs", "--server", fhirBase))
	for _, tok := range []string{etl, reader, rsaTok} {
		if tok == "" || strings.ContainsAny(tok, " \n") {
			t.Fatalf("token output is not one token: %q", tok)
		}
	}
	if res, _ := call(t, http.MethodPut, fhirBase+"/Patient/t1", etl, nil, map[string]any{"resourceType": "Patient", "id": "t1"}); res.StatusCode != http.StatusCreated {
		t.Fatalf("PUT with the etl token: %d", res.StatusCode)
	}
	for name, tok := range map[string]string{"reader": reader, "rsa": rsaTok} {
		if res, _ := call(t, http.MethodGet, fhirBase+"/Patient/t1", tok, nil, nil); res.StatusCode != http.StatusOK {
			t.Errorf("GET with the %s token: %d", name, res.StatusCode)
		}
		if res, _ := call(t, http.MethodPut, fhirBase+"/Patient/t1", tok, nil, map[string]any{"resourceType": "Patient", "id": "t1", "active": true}); res.StatusCode != http.StatusForbidden {
			t.Errorf("PUT with the read-only %s token: %d", name, res.StatusCode)
		}
	}
	if res, _ := call(t, http.MethodGet, fhirBase+"/Observation", reader, nil, nil); res.StatusCode != http.StatusForbidden {
		t.Errorf("Observation search with a Patient-only token: %d", res.StatusCode)
	}
	var resp map[string]any
	if err := json.Unmarshal([]byte(cli(t, "token", "--client", "reader", "--key", readerKey, "--scope", "system/Patient.rs", "--server", fhirBase, "--json")), &resp); err != nil ||
		resp["token_type"] != "Bearer" || resp["scope"] != "system/Patient.rs" || resp["access_token"] == "" {
		t.Errorf("--json: %v %v", err, resp)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--client", "reader", "--key", keyFile, "--scope", "system/Patient.rs"}, "invalid_client"},
		{[]string{"--client", "reader", "--key", readerKey, "--scope", "system/Observation.rs"}, "invalid_scope"},
		{[]string{"--client", "nobody", "--key", readerKey, "--scope", "system/Patient.rs"}, "unknown client"},
		{[]string{"--client", "reader", "--key", jwksFile, "--scope", "system/Patient.rs"}, "public key"},
		{[]string{"--client", "reader", "--key", readerKey, "--scope", "system/Patient.rs", "--server", "http://127.0.0.1:1/fhir"}, "is the server running"},
	} {
		args := append([]string{"token"}, tc.args...)
		if !strings.Contains(strings.Join(tc.args, " "), "--server") {
			args = append(args, "--server", fhirBase)
		}
		code, out, errOut := runCode(t, args...)
		msg := runErr(t, args...)
		if code != 1 || out != "" || !strings.Contains(msg, tc.want) {
			t.Errorf("anodyne %s: status %d, stdout %q, error %q (stderr %q); want %q", strings.Join(args, " "), code, out, msg, errOut, tc.want)
		}
	}
}

// runErr runs a command line that must fail and returns its error text.
func runErr(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut strings.Builder
	err := run(t.Context(), args, &out, &errOut, func(string) string { return "" }, nil)
	if err == nil {
		t.Fatalf("anodyne %s succeeded", strings.Join(args, " "))
	}
	return err.Error()
}
