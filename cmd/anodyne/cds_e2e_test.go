package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// cdsMedRequest is a MedicationRequest of one tablet count every hours.
func cdsMedRequest(id, status, rxcui, text string, tablets, hours float64) map[string]any {
	var res map[string]any
	json.Unmarshal([]byte(medRequest(id, "p", rxcui, text, tablets, hours)), &res)
	res["status"] = status
	return res
}

// TestServeCDSHooks: the served CDS Hooks service with the secure
// defaults: a client JWT checked against the --cds-client JWKS file, and,
// without prefetch, this server's data read with the hook's access token
// through the FHIR API's authorization (and audited).
func TestServeCDSHooks(t *testing.T) {
	dir := t.TempDir()
	etlKey, readerKey := filepath.Join(dir, "etl.jwk"), filepath.Join(dir, "reader.jwk")
	cli(t, "clients", "add", "--data-dir", dir, "--id", "etl", "--generate-key", etlKey, "--scope", "system/*.cruds")
	cli(t, "clients", "add", "--data-dir", dir, "--id", "reader", "--generate-key", readerKey, "--scope", "system/Patient.rs")
	auditorKey := filepath.Join(dir, "auditor.jwk")
	cli(t, "clients", "add", "--data-dir", dir, "--id", "auditor", "--generate-key", auditorKey, "--scope", "system/AuditEvent.rs")

	ehr, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &ehr.PublicKey, KeyID: "ehr", Algorithm: "ES384", Use: "sig"}}})
	jwksFile := filepath.Join(dir, "ehr.jwks")
	os.WriteFile(jwksFile, jwks, 0o600)

	srv := startServe(t, "--data-dir", dir, "--cds-client", "issuer=https://ehr.example.org,jwks-file="+jwksFile)
	fhirBase := srv.base + "/fhir"
	etl := strings.TrimSpace(cli(t, "token", "--client", "etl", "--key", etlKey, "--scope", "system/*.cruds", "--server", fhirBase))
	reader := strings.TrimSpace(cli(t, "token", "--client", "reader", "--key", readerKey, "--scope", "system/Patient.rs", "--server", fhirBase))
	if res, _ := call(t, "PUT", fhirBase+"/Patient/p", etl, nil, map[string]any{"resourceType": "Patient", "id": "p"}); res.StatusCode != 201 {
		t.Fatalf("PUT Patient: %d", res.StatusCode)
	}
	// oxycodone 5 mg every 6 h: 5 × 4 × 1.5 = 30 MME/day.
	if res, _ := call(t, "PUT", fhirBase+"/MedicationRequest/oxy", etl, nil, cdsMedRequest("oxy", "active", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", 1, 6)); res.StatusCode != 201 {
		t.Fatalf("PUT MedicationRequest: %d", res.StatusCode)
	}

	service := srv.base + "/cds-services/opioid-mme"
	clientJWT := func() string {
		sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES384, Key: ehr}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "ehr"))
		raw, err := jwt.Signed(sig).Claims(map[string]any{"iss": "https://ehr.example.org", "sub": "ehr", "aud": service,
			"exp": time.Now().Add(4 * time.Minute).Unix(), "iat": time.Now().Unix(), "jti": time.Now().Format(time.RFC3339Nano)}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	// hydromorphone 2 mg, 2 tablets every 4 h: 2 × 2 × 6 × 5 = 120 MME/day; with the oxycodone 150.
	// fhirAuthorization.subject is the client the token was issued to.
	hook := func(token, subject string) map[string]any {
		return map[string]any{
			"hook": "order-sign", "hookInstance": "0b5c8a4e-3f52-4e3c-9f0a-6a4f2b1f6c11", "fhirServer": fhirBase,
			"fhirAuthorization": map[string]any{"access_token": token, "token_type": "Bearer", "expires_in": 300, "scope": "system/*.rs", "subject": subject},
			"context": map[string]any{"userId": "Practitioner/1", "patientId": "p", "draftOrders": map[string]any{"resourceType": "Bundle",
				"entry": []any{map[string]any{"resource": cdsMedRequest("d1", "draft", "897696", "hydromorphone hydrochloride 2 MG Oral Tablet", 2, 4)}}}},
		}
	}
	jsonCT := map[string]string{"Content-Type": "application/json", "Accept": "application/json"}

	if res, m := call(t, "GET", srv.base+"/cds-services", "", nil, nil); res.StatusCode != 200 || len(m["services"].([]any)) != 2 {
		t.Fatalf("discovery: %d %v", res.StatusCode, m)
	}
	if res, m := call(t, "POST", service, "", jsonCT, hook(etl, "etl")); res.StatusCode != 401 || m["error"] != "unauthorized" {
		t.Fatalf("without a client JWT: %d %v", res.StatusCode, m)
	}
	res, m := call(t, "POST", service, clientJWT(), jsonCT, hook(etl, "etl"))
	cards, _ := m["cards"].([]any)
	if res.StatusCode != 200 || len(cards) != 1 {
		t.Fatalf("order-sign: %d %v", res.StatusCode, m)
	}
	c := cards[0].(map[string]any)
	if c["indicator"] != "critical" || !strings.Contains(c["summary"].(string), "150 MME/day") {
		t.Errorf("card %v, want critical with 150 MME/day", c)
	}
	// A token that may not search MedicationRequests reads nothing: 412.
	if res, m := call(t, "POST", service, clientJWT(), jsonCT, hook(reader, "reader")); res.StatusCode != 412 {
		t.Errorf("with a Patient-only token: %d %v", res.StatusCode, m)
	}
	// The read of this server's data is audited.
	auditor := strings.TrimSpace(cli(t, "token", "--client", "auditor", "--key", auditorKey, "--scope", "system/AuditEvent.rs", "--server", fhirBase))
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, b := call(t, "GET", fhirBase+"/AuditEvent?_count=200", auditor, nil, nil)
		raw, _ := json.Marshal(b)
		if strings.Contains(string(raw), "CDS Hooks order-sign for CDS client https://ehr.example.org") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no AuditEvent for the CDS Hooks read: %s", raw)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestServeCDSFlags: the CDS flags are checked before the server starts.
func TestServeCDSFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--cds-client-auth", "maybe"},
		{"--cds-client", "issuer=x"},
		{"--cds-client", "issuer=x,jwks=file.json"},
		{"--cds-client", "issuer=x,jwks-file=a,color=blue"},
		{"--cds-client", "issuer=x,jwks-file=a,fhir-server=ehr.example"},
		{"--cds-client", "issuer=x,jwks-file=a", "--cds-client-auth", "off"},
	} {
		err := run(t.Context(), append([]string{"serve", "--data-dir", t.TempDir()}, args...), nil, &strings.Builder{}, func(string) string { return "" }, nil)
		if err == nil {
			t.Errorf("serve %v started", args)
		}
	}
	// A JWKS file that does not hold stops the start, naming it.
	bad := filepath.Join(t.TempDir(), "bad.jwks")
	os.WriteFile(bad, []byte(`{"keys": []}`), 0o600)
	err := run(t.Context(), []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--cds-client", "issuer=x,jwks-file=" + bad}, nil, &strings.Builder{}, func(string) string { return "" }, nil)
	if err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("empty JWKS file: %v", err)
	}
}
