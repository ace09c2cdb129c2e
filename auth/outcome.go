package auth

import (
	"encoding/json"
	"net/http"
)

// outcome builds a minimal FHIR OperationOutcome. It is built here, not
// taken from the fhir package, because auth sits below fhir.
func outcome(code, diagnostics string) []byte {
	b, _ := json.Marshal(map[string]any{
		"resourceType": "OperationOutcome",
		"issue": []any{map[string]any{
			"severity":    "error",
			"code":        code,
			"diagnostics": diagnostics,
		}},
	})
	return b
}

// WriteUnauthorized answers 401 with a Bearer challenge (RFC 6750 section 3)
// and an OperationOutcome body.
func WriteUnauthorized(w http.ResponseWriter, realm, errCode, desc string) {
	ch := `Bearer realm="` + realm + `"`
	if errCode != "" {
		ch += `, error="` + errCode + `", error_description="` + sanitizeHeader(desc) + `"`
	}
	w.Header().Set("WWW-Authenticate", ch)
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write(outcome("login", desc))
}

// WriteUnavailable answers 503 with Retry-After and a transient
// OperationOutcome: the request may succeed when retried.
func WriteUnavailable(w http.ResponseWriter, desc string) {
	w.Header().Set("Content-Type", "application/fhir+json")
	w.Header().Set("Retry-After", "5")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(outcome("transient", desc))
}

// WriteForbidden answers 403 with an OperationOutcome.
func WriteForbidden(w http.ResponseWriter, desc string) {
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(http.StatusForbidden)
	_, _ = w.Write(outcome("forbidden", desc))
}

func sanitizeHeader(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '\\' || c < 0x20 || c > 0x7e {
			c = ' '
		}
		out = append(out, c)
	}
	return string(out)
}
