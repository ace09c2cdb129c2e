package smart

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// AccountStore keeps local accounts; the server, the admin tools and the
// CLI share it.
type AccountStore struct{ kv kv }

// NewAccountStore returns the account store kept in store.
func NewAccountStore(store storage.KV) *AccountStore { return &AccountStore{kv: kv{store}} }

// PutAccount creates or replaces a local account with a password.
func (s *Server) PutAccount(ctx context.Context, a Account, password string) error {
	return (&AccountStore{kv: s.kv}).Put(ctx, a, password)
}

// Delete removes a local account.
func (as *AccountStore) Delete(ctx context.Context, username string) error {
	key := pfxAccount + strings.ToLower(strings.TrimSpace(username))
	if _, err := as.kv.Get(ctx, key); err != nil {
		return fmt.Errorf("account %s: %w", username, err)
	}
	if err := as.kv.KV.Delete(ctx, key); err != nil {
		return fmt.Errorf("delete account %s: %w", username, err)
	}
	return nil
}

// Put creates or replaces a local account, hashing password with argon2id.
func (as *AccountStore) Put(ctx context.Context, a Account, password string) error {
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
	return as.kv.putJSON(ctx, pfxAccount+a.Username, a, 0)
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

// Get returns a local account; the error wraps storage.ErrNotFound for an
// unknown user name.
func (as *AccountStore) Get(ctx context.Context, username string) (*Account, error) {
	var a Account
	if err := as.kv.getJSON(ctx, pfxAccount+strings.ToLower(strings.TrimSpace(username)), &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// List returns every local account, in user-name order.
func (as *AccountStore) List(ctx context.Context) ([]*Account, error) {
	keys, err := as.kv.List(ctx, pfxAccount)
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	out := make([]*Account, 0, len(keys))
	for _, k := range keys {
		a, err := as.Get(ctx, strings.TrimPrefix(k, pfxAccount))
		if notFound(err) {
			continue // deleted between List and Get
		}
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}
