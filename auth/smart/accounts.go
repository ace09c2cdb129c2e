package smart

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// PutAccount creates or replaces a local account with a password.
func (s *Server) PutAccount(ctx context.Context, a Account, password string) error {
	a.Username = strings.ToLower(strings.TrimSpace(a.Username))
	if a.Username == "" || strings.Contains(a.Username, "/") {
		return fmt.Errorf("smart: bad user name %q", a.Username)
	}
	if len(password) < 8 {
		return fmt.Errorf("smart: password of %s is shorter than 8 characters", a.Username)
	}
	if err := checkFHIRUser(a.FHIRUser); err != nil {
		return err
	}
	h, err := HashPassword(password)
	if err != nil {
		return err
	}
	a.PasswordHash = h
	return s.kv.putJSON(ctx, pfxAccount+a.Username, a, 0)
}

func checkFHIRUser(u string) error {
	typ, id, ok := strings.Cut(u, "/")
	if !ok || id == "" || strings.Contains(id, "/") {
		return fmt.Errorf("smart: fhirUser %q must be Type/id", u)
	}
	switch typ {
	case "Patient", "Practitioner", "PractitionerRole", "RelatedPerson", "Person":
		return nil
	}
	return fmt.Errorf("smart: fhirUser %q must be a Patient, Practitioner, PractitionerRole, RelatedPerson or Person", u)
}

// LinkFederatedUser maps a user of the upstream provider (issuer, subject)
// to a FHIR user and the patients they may pick.
func (s *Server) LinkFederatedUser(ctx context.Context, issuer, subject string, a Account) error {
	if err := checkFHIRUser(a.FHIRUser); err != nil {
		return err
	}
	a.PasswordHash = ""
	return s.kv.putJSON(ctx, federatedKey(issuer, subject), a, 0)
}

func federatedKey(issuer, subject string) string {
	h := sha256.Sum256([]byte(issuer + "\x00" + subject))
	return pfxFederated + hex.EncodeToString(h[:])
}
